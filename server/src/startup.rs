//! Assembling the application: connect, migrate, seed, wire the pipeline,
//! bind the listener, serve until told to stop.
//!
//! [`Application::build`] binds its own listener, so tests pass port 0 and
//! read [`Application::port`]; `main` passes the configured address.

use crate::api;
use crate::assets;
use crate::background::BackgroundTask;
use crate::config::Config;
use crate::dashboard::Sampler;
use crate::db::{Database, items, settings};
use crate::hot_items::HotItems;
use crate::listener::LimitedListener;
use crate::metrics::Metrics;
use crate::orders::answer::AnswerStage;
use crate::orders::idempotency::ClaimStage;
use crate::orders::ledger::coalesce::Coalescer;
use crate::orders::ledger::versioned::Ledger;
use crate::orders::ledger::{LedgerStage, LedgerWrite};
use crate::orders::lookup::Lookup;
use crate::orders::refusal::Gate;
use crate::orders::reserve::ReserveStage;
use crate::orders::settle::SettleStage;
use crate::orders::strategy::Strategy;
use crate::orders::{OrderPipeline, Parts, Stages};
use crate::payments::resale::ResaleClock;
use crate::payments::signature::WebhookSecret;
use crate::payments::{PaymentDesk, reaper as payment_reaper};
use crate::rate_limit::RateLimiter;
use crate::records::generation::RecordsGeneration;
use crate::records::{Records, redis::RedisRecords, sql::SqlRecords};
use crate::redis_conn::RedisConn;
use crate::reservation::guard::RedisGuard;
use crate::reservation::loader::CounterLoader;
use crate::reservation::memo::SoldOutMemo;
use crate::reservation::settled::SettledSellOuts;
use crate::reservation::{
    ReservationStore, memory::InProcessStore, reaper, reconcile, redis::RedisStore,
};
use crate::session::ensure_buyer;
use crate::state::{AppContext, AppState, GuardTotals};
use crate::stock::StockPath;
use crate::waiting_room::WaitingRooms;
use anyhow::Context;
use app::ports::SharedCheckout;
use app::ports::SharedDashboard;
use axum::Router;
use axum::http::{HeaderName, HeaderValue, Request};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum_extra::extract::cookie::Key;
use leptos::config::LeptosOptions;
use leptos::prelude::provide_context;
use leptos_axum::{LeptosRoutes, generate_route_list};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

/// How often expired idempotency records are purged from the database.
const PURGE_INTERVAL: Duration = Duration::from_secs(60);
/// How long shutting down waits for orders still running.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Application {
    listener: TcpListener,
    max_connections: usize,
    router: Router,
    state: AppState,
    background: Vec<BackgroundTask>,
    tasks: TaskTracker,
}

/// The reservation layer, when strategy A can run.
struct ReservationLayer {
    store: Arc<dyn ReservationStore>,
    memo: Arc<SoldOutMemo>,
    settled: Arc<SettledSellOuts>,
    loader: Arc<CounterLoader>,
    /// When the store is Redis.
    guard: Option<Arc<RedisGuard>>,
}

impl Application {
    /// Connects to everything, runs migrations, seeds an empty database (if
    /// configured), and binds `config.http.site_addr`.
    ///
    /// # Errors
    /// Any dependency that cannot be reached or set up, with context.
    pub async fn build(config: Config, leptos: LeptosOptions) -> anyhow::Result<Self> {
        let metrics = Arc::new(Metrics::new()?);
        let hot_items = Arc::new(HotItems::new());
        let db = Database::connect(&config.database.url, config.database.max_connections)
            .await
            .with_context(|| format!("database {}", config.database.url_redacted()))?;
        if config.database.seed_demo_items {
            let seeded = items::seed_demo(&db).await.context("seeding demo items")?;
            if seeded > 0 {
                tracing::info!(seeded, "seeded demo items into an empty inventory");
            }
        }
        let cookie_key = cookie_key(&db, config.sessions.cookie_secret.as_deref()).await?;
        let redis = RedisConn::connect(&config.redis.target, config.redis.timeout).await?;
        let Wired {
            pipeline,
            reservation,
            waiting_rooms,
            records,
            stock,
            payments,
            mut background,
            tasks,
        } = wire_pipeline(&config, &db, redis.as_ref(), &metrics, &hot_items).await?;
        background.push(spawn_metrics_upkeep(metrics.clone()));
        let dashboard = Arc::new(
            Sampler::new(
                metrics.clone(),
                hot_items.clone(),
                db.clone(),
                config.orders.strategy.label(),
            )
            .with_payments(payments.is_some()),
        );
        background.push(crate::dashboard::spawn(dashboard.clone()));

        let admin_token = match &config.sessions.admin_token {
            Some(token) => token.clone(),
            None => {
                let token = uuid::Uuid::new_v4().simple().to_string();
                tracing::warn!(admin_token = %token, "ADMIN_TOKEN is not set; generated one for this run");
                token
            }
        };

        let listener = TcpListener::bind(config.http.site_addr)
            .await
            .with_context(|| format!("binding {}", config.http.site_addr))?;
        tracing::info!(
            strategy = config.orders.strategy.label(),
            database = db.dialect().name(),
            reservation = reservation.as_ref().map_or("none", |store| store.kind()),
            "order pipeline ready"
        );

        let state = AppState(Arc::new(AppContext {
            sessions: crate::session::SessionCookies::new(cookie_key),
            config,
            leptos,
            db,
            reservation,
            records,
            pipeline,
            waiting_rooms,
            stock,
            payments,
            admin_token,
            metrics,
            hot_items,
            dashboard,
            guard_totals: GuardTotals::default(),
        }));
        let router = router(state.clone());
        Ok(Self {
            listener,
            max_connections: state.config.http.max_connections,
            router,
            state,
            background,
            tasks,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then finishes in-flight requests.
    ///
    /// # Errors
    /// The listener failed.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            listener,
            max_connections,
            router,
            state,
            background,
            tasks,
        } = self;
        axum::serve(
            LimitedListener::new(listener, max_connections),
            router.into_make_service(),
        )
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving HTTP")?;
        // Orders whose clients hung up, confirm retries, orders in doubt.
        tasks.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                running = tasks.len(),
                "shutting down with orders still running; their holds go back at their deadlines"
            );
        }
        drop(background);
        state.db.close().await;
        Ok(())
    }
}

/// The order pipeline and what lives beside it.
pub struct Wired {
    pub pipeline: Arc<OrderPipeline>,
    /// The reservation store, when strategy A can run.
    pub reservation: Option<Arc<dyn ReservationStore>>,
    /// Drops' waiting rooms, kept by the reservation store.
    pub waiting_rooms: Option<Arc<WaitingRooms>>,
    pub records: Records,
    /// What follows a stock change the database committed.
    pub stock: Arc<StockPath>,
    /// The payment deadline, when `PAYMENT_WINDOW_SECS` is set.
    pub payments: Option<Arc<PaymentDesk>>,
    /// Periodic tasks: the breaker probe, the reaper, reconciliation, the
    /// records generation, purging records, expiring unpaid orders.
    pub background: Vec<BackgroundTask>,
    /// Orders running detached from their requests, and their follow-ups.
    pub tasks: TaskTracker,
}

/// Wires the order pipeline's stages, stores and tasks from the
/// configuration: the one place that decides which layers exist.
///
/// # Errors
/// The database cannot be read.
pub async fn wire_pipeline(
    config: &Config,
    db: &Database,
    redis: Option<&RedisConn>,
    metrics: &Arc<Metrics>,
    hot_items: &Arc<HotItems>,
) -> anyhow::Result<Wired> {
    let tasks = TaskTracker::new();
    let mut background = Vec::new();

    let reservation = reservation_store(config, redis).map(|store| {
        let memo = Arc::new(SoldOutMemo::new(config.reservation.sold_out_memo));
        let loader = Arc::new(CounterLoader::new(store.clone(), db.clone(), memo.clone()));
        let guard = redis.map(|_| {
            Arc::new(RedisGuard::new(
                config.breaker.failure_threshold,
                config.breaker.cooldown,
                store.clone(),
                loader.clone(),
                metrics.clone(),
            ))
        });
        ReservationLayer {
            store,
            memo,
            settled: Arc::new(SettledSellOuts::new(db.clone())),
            loader,
            guard,
        }
    });

    // Redis keeps records when it carries strategy A.
    let redis_records = redis.filter(|_| reservation.is_some());
    let generation = match redis_records {
        Some(_) => {
            let generation = Arc::new(
                RecordsGeneration::start(db.clone())
                    .await
                    .context("reading the records generation")?,
            );
            background.push(generation.clone().spawn_refresh());
            Some(generation)
        }
        None => None,
    };
    let sql_records = Arc::new(SqlRecords::new(
        db.clone(),
        config.orders.idempotency_ttl,
        redis_records.is_none(),
    ));
    background.push(spawn_purge(sql_records.clone()));
    let records = Records {
        sql: sql_records.clone(),
        redis: redis_records
            .zip(generation.clone())
            .map(|(conn, generation)| {
                Arc::new(RedisRecords::new(
                    conn.clone(),
                    config.redis.key_prefix.clone(),
                    config.orders.idempotency_ttl,
                    generation,
                ))
            }),
    };
    let gate = Arc::new(Gate::new(db.clone(), sql_records));
    let resale = config
        .payments
        .window
        .map(|_| Arc::new(ResaleClock::new(metrics.clone())));
    let ledger = Arc::new(
        Ledger::new(db.clone(), config.ledger.backoff, metrics.clone())
            .with_payment_window(config.payments.window),
    );
    let writer: Arc<dyn LedgerWrite> = if config.ledger.batch_max > 1 {
        Arc::new(Coalescer::new(ledger.clone(), config.ledger.batch_max))
    } else {
        ledger.clone()
    };
    let memo = reservation.as_ref().map(|r| r.memo.clone());
    let guard = reservation.as_ref().and_then(|r| r.guard.clone());
    let stages = Stages {
        claim: ClaimStage::new(
            records.clone(),
            generation.clone(),
            gate.clone(),
            memo.clone(),
            guard.clone(),
            metrics.clone(),
        ),
        reserve: reservation.as_ref().map(|r| {
            ReserveStage::new(
                r.store.clone(),
                r.loader.clone(),
                r.memo.clone(),
                r.settled.clone(),
                r.guard.clone(),
                metrics.clone(),
                config.reservation.hold_ttl,
            )
        }),
        ledger: LedgerStage::new(writer, generation, metrics.clone())
            .with_resale_clock(resale.clone()),
        settle: SettleStage::new(
            reservation.as_ref().map(|r| r.store.clone()),
            memo.clone(),
            guard.clone(),
            ledger,
            metrics.clone(),
            tasks.clone(),
        ),
        answer: AnswerStage::new(records.clone(), gate, metrics.clone()),
    };
    let pipeline = Arc::new(OrderPipeline::new(Parts {
        default_strategy: config.orders.strategy,
        stages,
        guard: guard.clone(),
        lookup: Lookup::new(db.clone(), records.clone()),
        rate_limiter: RateLimiter::new(
            config.http.order_rate_per_second,
            config.http.order_rate_burst,
        ),
        hot_items: hot_items.clone(),
        metrics: metrics.clone(),
        tasks: tasks.clone(),
    }));
    if let Some(guard) = &guard {
        background.push(spawn_breaker_probe(guard.clone(), config.breaker.cooldown));
    }
    let waiting_rooms = reservation.as_ref().map(|r| {
        let rooms = WaitingRooms::new(
            db.clone(),
            r.store.clone(),
            r.loader.clone(),
            metrics.clone(),
        );
        Arc::new(if config.payments.window.is_some() {
            rooms.with_payment_deadline()
        } else {
            rooms
        })
    });
    if let Some(rooms) = &waiting_rooms {
        background.push(
            rooms
                .clone()
                .spawn_admitter(config.reservation.admission_interval),
        );
    }
    if let Some(r) = &reservation {
        background.push(reaper::spawn(
            r.store.clone(),
            metrics.clone(),
            config.reservation.reaper_interval,
        ));
        background.push(reconcile::spawn(
            r.store.clone(),
            db.clone(),
            metrics.clone(),
            config.reservation.reconcile_interval,
        ));
    }
    let stock = Arc::new(StockPath::new(
        reservation.as_ref().map(|r| r.store.clone()),
        memo.clone(),
        reservation.as_ref().map(|r| r.settled.clone()),
        resale,
    ));
    let payments = match config.payments.window {
        Some(_) => {
            let desk = Arc::new(PaymentDesk::new(
                db.clone(),
                webhook_secret(db, config.payments.webhook_secret.as_deref()).await?,
                config.payments.provider,
                stock.clone(),
                metrics.clone(),
            ));
            background.push(payment_reaper::spawn(
                desk.clone(),
                config.payments.reaper_interval,
            ));
            Some(desk)
        }
        None => None,
    };
    Ok(Wired {
        pipeline,
        reservation: reservation.map(|r| r.store),
        waiting_rooms,
        records,
        stock,
        payments,
        background,
        tasks,
    })
}

/// The secret webhooks are signed with: `PAYMENT_WEBHOOK_SECRET`, or else
/// (the demo provider; the configuration allows nothing else) the secret
/// the database keeps, so every instance checks the demo's signatures alike.
async fn webhook_secret(db: &Database, configured: Option<&str>) -> anyhow::Result<WebhookSecret> {
    let secret = match configured {
        Some(secret) => secret.to_owned(),
        None => settings::shared_secret(db, settings::PAYMENT_WEBHOOK_SECRET)
            .await
            .context("reading the demo payment provider's webhook secret kept in the database")?,
    };
    Ok(WebhookSecret::new(&secret))
}

/// The reservation store strategy A uses: Redis when configured, else the
/// in-process store. Built when A is the default or may be asked for per
/// request.
pub fn reservation_store(
    config: &Config,
    redis: Option<&RedisConn>,
) -> Option<Arc<dyn ReservationStore>> {
    let strategy_a_possible =
        config.orders.strategy == Strategy::ReserveFirst || config.orders.allow_strategy_override;
    match (strategy_a_possible, redis) {
        (false, _) => None,
        (true, Some(conn)) => Some(Arc::new(RedisStore::new(
            conn.clone(),
            config.redis.key_prefix.clone(),
        ))),
        (true, None) => Some(Arc::new(InProcessStore::new())),
    }
}

/// Probes Redis while the breaker is open (a few times per cooldown, so the
/// probe starts soon after the cooldown ends).
fn spawn_breaker_probe(guard: Arc<RedisGuard>, cooldown: Duration) -> BackgroundTask {
    BackgroundTask::every((cooldown / 4).max(Duration::from_millis(25)), move || {
        let guard = guard.clone();
        async move { guard.probe().await }
    })
}

/// The key that signs cookies: from `COOKIE_SECRET`, or else the secret the
/// database keeps (generated by the first instance to start), so instances
/// sharing a database share their buyers, across restarts too.
async fn cookie_key(db: &Database, configured: Option<&str>) -> anyhow::Result<Key> {
    let secret = match configured {
        Some(secret) => secret.to_owned(),
        None => settings::shared_secret(db, settings::COOKIE_SECRET)
            .await
            .context("reading the cookie secret kept in the database")?,
    };
    Ok(Key::derive_from(secret.as_bytes()))
}

/// Histogram upkeep, which the recorder leaves to its owner.
fn spawn_metrics_upkeep(metrics: Arc<Metrics>) -> BackgroundTask {
    BackgroundTask::every(Duration::from_secs(5), move || {
        metrics.run_upkeep();
        std::future::ready(())
    })
}

fn spawn_purge(records: Arc<SqlRecords>) -> BackgroundTask {
    BackgroundTask::every(PURGE_INTERVAL, move || {
        let records = records.clone();
        async move {
            match records.purge_expired(crate::db::now_ms()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(purged = n, "purged expired idempotency records"),
                Err(e) => tracing::warn!(error = %e, "purging idempotency records failed"),
            }
        }
    })
}

fn router(state: AppState) -> Router {
    let leptos_options = state.leptos.clone();
    let routes = generate_route_list(app::App);
    let checkout: SharedCheckout = state.0.clone();
    let context = move || provide_context::<SharedCheckout>(checkout.clone());
    let shell_options = leptos_options.clone();
    // The dashboard is a page of its own, rendered here only: the shop's
    // router (and so its wasm) does not know it.
    let dashboard: SharedDashboard = state.dashboard.clone();
    let dashboard_options = leptos_options.clone();
    let dashboard_page = leptos_axum::render_app_async_with_context(
        move || provide_context::<SharedDashboard>(dashboard.clone()),
        move || app::dashboard_shell(dashboard_options.clone()),
    );

    // Pages, server functions and the no-JS form need a buyer: mint one on
    // the first visit.
    let pages = Router::new()
        .leptos_routes_with_context(&state, routes, context, move || {
            app::shell(shell_options.clone())
        })
        .route("/dashboard", get(dashboard_page))
        .route("/items/{id}/buy", post(api::forms::buy))
        .route("/items/{id}/queue", post(api::forms::join_queue))
        .route("/pay/{order_id}", post(api::forms::pay_demo))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            ensure_buyer,
        ))
        .route("/lang/{tag}", get(api::forms::switch_language))
        .route("/dashboard/login", post(api::forms::dashboard_login))
        .route("/dashboard/logout", post(api::forms::dashboard_logout))
        .fallback(leptos_axum::file_and_error_handler::<AppState, _>(
            app::shell,
        ));

    Router::new()
        .nest("/api", api::router())
        // `/api/` itself is not under the nested router's fallback.
        .route("/api/", axum::routing::any(api::not_found))
        .route("/healthz", get(api::health::healthz))
        .route("/readyz", get(api::health::readyz))
        .route("/metrics", get(api::health::metrics))
        .nest(
            &format!("/{}", leptos_options.site_pkg_dir),
            assets::pkg_router(&leptos_options),
        )
        .merge(assets::pages(pages))
        .layer(CatchPanicLayer::custom(|_panic| {
            crate::error::ApiError::internal(anyhow::anyhow!("handler panicked")).into_response()
        }))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
            let id = request
                .headers()
                .get(&REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            tracing::info_span!("http", method = %request.method(), uri = %request.uri(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::new(REQUEST_ID, RequestIdFromThreadRng))
        .with_state(state)
}

/// The header that carries each request's id, set here when the client
/// sent none, and echoed in the response.
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Request ids as random (version 4) UUIDs from the thread's CSPRNG.
/// tower-http's `MakeRequestUuid` asks the kernel for each one: a getrandom
/// system call on every request of a sold-out flood.
#[derive(Debug, Clone, Copy)]
struct RequestIdFromThreadRng;

impl MakeRequestId for RequestIdFromThreadRng {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<RequestId> {
        let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
        let mut text = uuid::Uuid::encode_buffer();
        HeaderValue::from_str(id.hyphenated().encode_lower(&mut text))
            .ok()
            .map(RequestId::new)
    }
}

/// Completes on ctrl-c or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
