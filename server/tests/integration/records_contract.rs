//! The idempotency records contract, run against every record store: Redis,
//! and the database's records on SQLite, PostgreSQL and MariaDB. Time is
//! passed in, so leases run out without sleeping.

use crate::harness::{Backend, TestDb, TestRedis};
use app::domain::{BuyerId, IdempotencyKey, ItemId, Quantity};
use app::model::OrderRequest;
use futures_util::future::join_all;
use server::background::BackgroundTask;
use server::config::RedisTarget;
use server::db::Database;
use server::records::generation::RecordsGeneration;
use server::records::kept_refusals::KeptRefusals;
use server::records::redis::{Loaded, RedisRecords};
use server::records::sql::{KeptRefusal, SqlRecords};
use server::records::{
    CLAIM_LEASE, Claimed, DurableAnswer, Finished, KeyScope, LeaseOwner, Proof, Record,
    RecordStore, RequestHash, StoredResponse,
};
use server::redis_conn::RedisConn;
use std::sync::Arc;
use std::time::Duration;

const TTL: Duration = Duration::from_secs(3_600);
const NOW: i64 = 1_700_000_000_000;

/// A store under test, with what keeps its servers alive.
struct Subject {
    name: &'static str,
    store: Arc<dyn RecordStore>,
    redis: Option<Arc<RedisRecords>>,
    generation: Option<Arc<RecordsGeneration>>,
    db: Database,
    _db: TestDb,
    _redis: Option<(TestRedis, BackgroundTask)>,
}

async fn database(backend: Backend) -> (TestDb, Database) {
    let test_db = TestDb::create(backend).await;
    let db = Database::connect(&test_db.url, 4)
        .await
        .expect("connect and migrate");
    (test_db, db)
}

async fn subjects() -> Vec<Subject> {
    let mut subjects = Vec::new();
    for (name, backend) in [
        ("sqlite", Backend::Sqlite),
        ("postgres", Backend::Postgres),
        ("mariadb", Backend::MySql),
    ] {
        let (test_db, db) = database(backend).await;
        subjects.push(Subject {
            name,
            store: Arc::new(SqlRecords::new(db.clone(), TTL, true)),
            redis: None,
            generation: None,
            db,
            _db: test_db,
            _redis: None,
        });
    }
    let (test_db, db) = database(Backend::Postgres).await;
    let test_redis = TestRedis::new();
    let conn = RedisConn::connect(
        &RedisTarget::Single(test_redis.url.clone()),
        Duration::from_secs(2),
    )
    .await
    .expect("redis url")
    .expect("a connection");
    let generation = Arc::new(
        RecordsGeneration::start(db.clone())
            .await
            .expect("generation"),
    );
    let refresh = generation.clone().spawn_refresh();
    let redis = Arc::new(RedisRecords::new(
        conn,
        test_redis.prefix.clone(),
        TTL,
        generation.clone(),
    ));
    subjects.push(Subject {
        name: "redis",
        store: redis.clone(),
        redis: Some(redis),
        generation: Some(generation),
        db,
        _db: test_db,
        _redis: Some((test_redis, refresh)),
    });
    subjects
}

/// The Redis store alone, for tests of what only Redis records do.
async fn redis_subject() -> Subject {
    subjects()
        .await
        .into_iter()
        .find(|s| s.name == "redis")
        .expect("the redis subject")
}

impl Subject {
    /// A fresh buyer whose records this store vouches for (Redis: marked
    /// complete, as a newly minted buyer is).
    async fn buyer(&self) -> BuyerId {
        let buyer = BuyerId::parse(&uuid::Uuid::new_v4().to_string()).expect("buyer");
        if let Some(redis) = &self.redis {
            redis.mark_new_buyer(&buyer).await.expect("mark");
        }
        buyer
    }

    /// The Redis subject's store, records generation and server.
    fn redis_parts(&self) -> (&RedisRecords, &RecordsGeneration, &TestRedis) {
        match (&self.redis, &self.generation, &self._redis) {
            (Some(redis), Some(generation), Some((test_redis, _))) => {
                (redis, generation, test_redis)
            }
            _ => unreachable!("only the redis subject has a store, generation and server"),
        }
    }
}

/// Loads a buyer's durable answers the way a claim does: under a fence put
/// before the answers were read (here: handed in).
async fn load(
    redis: &RedisRecords,
    generation: &RecordsGeneration,
    buyer: &BuyerId,
    answers: &[DurableAnswer],
    now_ms: i64,
) -> Loaded {
    let current = generation.current().expect("a fresh generation reading");
    let load = redis
        .fence_load(buyer, current)
        .await
        .expect("fence the load")
        .expect("the buyer's records need a load");
    redis
        .load_buyer(load, answers, now_ms)
        .await
        .expect("load the buyer")
}

/// The Redis key of a buyer's marker (`key` None) or of one of its records.
fn redis_key(test_redis: &TestRedis, buyer: &BuyerId, key: Option<&str>) -> String {
    match key {
        None => format!("{}idem:{{{buyer}}}", test_redis.prefix),
        Some(key) => format!("{}idem:{{{buyer}}}:{key}", test_redis.prefix),
    }
}

/// Redis loses these keys, as a FLUSHALL would (for this test's keys only:
/// the server is shared).
async fn lose(test_redis: &TestRedis, keys: &[String]) {
    let mut conn = test_redis.connection().await;
    let _: i64 = redis::cmd("DEL")
        .arg(keys)
        .query_async(&mut conn)
        .await
        .expect("del");
}

fn scope(buyer: &BuyerId, key: &str) -> KeyScope {
    KeyScope {
        buyer: buyer.clone(),
        key: IdempotencyKey::parse(key).expect("key"),
    }
}

fn hash(qty: i64) -> RequestHash {
    RequestHash::of(
        &OrderRequest {
            item_id: ItemId::new(1).expect("item"),
            qty: Quantity::new(qty).expect("qty"),
        },
        None,
    )
}

fn refusal() -> StoredResponse {
    StoredResponse {
        status: 409,
        body: r#"{"code":"sold_out","message":"sold out","retryable":false}"#.into(),
    }
}

/// A 201 answer naming order `id`.
fn receipt(id: &str) -> StoredResponse {
    StoredResponse {
        status: 201,
        body: format!(r#"{{"order_id":"{id}","item_id":1,"qty":1}}"#),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_is_exclusive_until_its_owner_finishes_it() {
    for s in subjects().await {
        let buyer = s.buyer().await;
        let k = scope(&buyer, "k1");
        let (first, second) = (LeaseOwner::new(), LeaseOwner::new());
        let claimed = s.store.claim(&k, &hash(1), &first, NOW, None).await;
        assert_eq!(
            claimed.ok(),
            Some(Claimed::Run(Proof::NoOrder)),
            "{}",
            s.name
        );
        let again = s.store.claim(&k, &hash(1), &second, NOW + 1, None).await;
        assert_eq!(again.ok(), Some(Claimed::InProgress), "{}", s.name);
        assert_eq!(
            s.store.lookup(&k, NOW + 1).await.ok(),
            Some(Some(Record::Running)),
            "{}",
            s.name
        );
        let finished = s
            .store
            .finish(&k, &hash(1), &first, &refusal(), NOW + 2)
            .await;
        assert_eq!(finished.ok(), Some(Finished::Stored), "{}", s.name);
        let replay = s.store.claim(&k, &hash(1), &second, NOW + 3, None).await;
        assert!(
            matches!(replay, Ok(Claimed::Replay(ref r, _)) if *r == refusal()),
            "{}: {replay:?}",
            s.name
        );
        let reused = s.store.claim(&k, &hash(2), &second, NOW + 3, None).await;
        assert!(
            matches!(reused, Ok(Claimed::KeyReused(Some(ref r), _)) if *r == refusal()),
            "{}: {reused:?}",
            s.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_owner_after_a_takeover_finishes_or_drops_the_claim() {
    let lease = CLAIM_LEASE.as_millis() as i64;
    for s in subjects().await {
        let buyer = s.buyer().await;
        let k = scope(&buyer, "k2");
        let (first, second) = (LeaseOwner::new(), LeaseOwner::new());
        s.store
            .claim(&k, &hash(1), &first, NOW, None)
            .await
            .expect("claim");
        assert_eq!(
            s.store.lookup(&k, NOW + lease + 1).await.ok(),
            Some(Some(Record::Abandoned)),
            "{}: a claim whose lease ran out reads as abandoned",
            s.name
        );
        let taken = s
            .store
            .claim(&k, &hash(1), &second, NOW + lease + 1, None)
            .await;
        assert_eq!(
            taken.ok(),
            Some(Claimed::Run(Proof::Unproven)),
            "{}: a takeover proves nothing",
            s.name
        );
        let late = s
            .store
            .finish(&k, &hash(1), &first, &refusal(), NOW + lease + 2)
            .await;
        assert_eq!(late.ok(), Some(Finished::NotOwner), "{}", s.name);
        s.store
            .abandon(&k, &hash(1), &first)
            .await
            .expect("abandon");
        assert_eq!(
            s.store.lookup(&k, NOW + lease + 2).await.ok(),
            Some(Some(Record::Running)),
            "{}: the first owner cannot drop the new owner's claim",
            s.name
        );
        s.store
            .abandon(&k, &hash(1), &second)
            .await
            .expect("abandon");
        assert_eq!(
            s.store.lookup(&k, NOW + lease + 2).await.ok(),
            Some(None),
            "{}: its owner can",
            s.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_answer_is_stored_only_under_a_proven_new_key() {
    for s in subjects().await {
        let buyer = s.buyer().await;
        let k = scope(&buyer, "k3");
        let answered = s
            .store
            .claim(&k, &hash(1), &LeaseOwner::new(), NOW, Some(&refusal()))
            .await;
        assert_eq!(answered.ok(), Some(Claimed::Answered), "{}", s.name);
        let replay = s
            .store
            .claim(&k, &hash(1), &LeaseOwner::new(), NOW + 1, Some(&refusal()))
            .await;
        assert!(
            matches!(replay, Ok(Claimed::Replay(..))),
            "{}: {replay:?}",
            s.name
        );
    }
}

/// A key with an order in the database is never claimed as new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_with_an_order_is_not_new_to_a_store_that_never_saw_it() {
    for s in subjects().await {
        let buyer = BuyerId::parse(&uuid::Uuid::new_v4().to_string()).expect("buyer");
        let item = server::db::items::create(
            &s.db,
            &server::db::items::NewItem {
                title: "Camera".into(),
                condition: "good".into(),
                seller: "ann".into(),
                price_cents: 100,
                stock: 1,
                max_per_buyer: None,
                terms: Default::default(),
            },
        )
        .await
        .expect("item");
        let sql = s.db.sql(
            "INSERT INTO orders (id, buyer, idempotency_key, item_id, qty, unit_price_cents, status, created_at) \
             VALUES (?, ?, 'k4', ?, 1, 100, 'confirmed', 1)",
        );
        sqlx::query(&sql)
            .bind(uuid::Uuid::new_v4().to_string())
            .bind(buyer.as_str())
            .bind(item.id.get())
            .execute(s.db.pool())
            .await
            .expect("order");
        let k = scope(&buyer, "k4");
        let claimed = s
            .store
            .claim(&k, &hash(1), &LeaseOwner::new(), NOW, None)
            .await;
        match s.name {
            // Redis cannot vouch for a buyer it never loaded: load first.
            "redis" => assert_eq!(claimed.ok(), Some(Claimed::LoadBuyer)),
            name => assert_eq!(claimed.ok(), Some(Claimed::OrderExists), "{name}"),
        }
    }
}

/// Redis loses a running claim (a FLUSHALL, a restart without persistence)
/// while its attempt is still placing the order, and the buyer's answers
/// are loaded again before the order commits: the marker then vouches for
/// records that lack the key. The order's answer must be stored over the
/// lost claim, so that a replay is answered the order, never proven new and
/// refused. On main before this test, finish answered NotOwner and the
/// replay was answered the sold-out refusal (the fault run's history
/// checker caught it as r2 created-and-refused on PostgreSQL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_whose_claim_redis_lost_is_stored_over_the_reloaded_records() {
    let s = redis_subject().await;
    let (redis, generation, test_redis) = s.redis_parts();
    let buyer = s.buyer().await;
    let k = scope(&buyer, "k5");
    let attempt = LeaseOwner::new();
    let claimed = s.store.claim(&k, &hash(1), &attempt, NOW, None).await;
    assert_eq!(claimed.ok(), Some(Claimed::Run(Proof::NoOrder)));

    // Redis loses the buyer's claim and marker; another attempt of the
    // buyer loads their answers again (no order committed yet).
    lose(
        test_redis,
        &[
            redis_key(test_redis, &buyer, Some("k5")),
            redis_key(test_redis, &buyer, None),
        ],
    )
    .await;
    assert_eq!(
        load(redis, generation, &buyer, &[], NOW + 1).await,
        Loaded::Written
    );

    // The order commits; its answer is stored although the claim is gone.
    let order = receipt("o-1");
    let finished = s
        .store
        .finish(&k, &hash(1), &attempt, &order, NOW + 5)
        .await;
    assert_eq!(finished.ok(), Some(Finished::Stored));

    // A replay on a sold-out item is answered the order.
    let replay = s
        .store
        .claim(&k, &hash(1), &LeaseOwner::new(), NOW + 6, Some(&refusal()))
        .await;
    assert!(
        matches!(replay, Ok(Claimed::Replay(ref r, _)) if *r == order),
        "{replay:?}"
    );

    // A refusal never replaces an order, and an order never replaces
    // another order.
    let other = LeaseOwner::new();
    let late_refusal = s
        .store
        .finish(&k, &hash(1), &other, &refusal(), NOW + 7)
        .await;
    assert_eq!(late_refusal.ok(), Some(Finished::NotOwner));
    let other_order = receipt("o-2");
    let second = s
        .store
        .finish(&k, &hash(1), &other, &other_order, NOW + 8)
        .await;
    assert_eq!(second.ok(), Some(Finished::NotOwner));
    assert_eq!(
        s.store.lookup(&k, NOW + 9).await.ok(),
        Some(Some(Record::Done(order)))
    );
}

/// Refusals kept in the database through the group writer, more at once
/// than one group takes: each is kept, a running claim of the same payload
/// is turned done, a key sent twice is kept once, and a record already done
/// keeps its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_kept_in_groups_are_each_kept_and_never_replace_an_answer() {
    for backend in [Backend::Sqlite, Backend::Postgres, Backend::MySql] {
        let (_test_db, db) = database(backend).await;
        let sql = Arc::new(SqlRecords::new(db, TTL, true));
        let buyer = BuyerId::parse(&uuid::Uuid::new_v4().to_string()).expect("buyer");
        let running = scope(&buyer, "running");
        let claimed = sql
            .claim(&running, &hash(1), &LeaseOwner::new(), NOW, None)
            .await;
        assert_eq!(claimed.ok(), Some(Claimed::Run(Proof::NoOrder)));
        let answered = scope(&buyer, "answered");
        let owner = LeaseOwner::new();
        let claimed = sql.claim(&answered, &hash(1), &owner, NOW, None).await;
        assert_eq!(claimed.ok(), Some(Claimed::Run(Proof::NoOrder)));
        let finished = sql
            .finish(&answered, &hash(1), &owner, &receipt("o-1"), NOW + 1)
            .await;
        assert_eq!(finished.ok(), Some(Finished::Stored));

        let fresh: Vec<KeyScope> = (0..300)
            .map(|n| scope(&buyer, &format!("fresh-{n}")))
            .collect();
        let mut sent = fresh.clone();
        sent.extend([running.clone(), answered.clone(), fresh[7].clone()]);
        let writer = KeptRefusals::start(sql.clone());
        let kept = join_all(sent.into_iter().map(|scope| {
            writer.keep(KeptRefusal {
                scope,
                hash: hash(1),
                response: refusal(),
                now_ms: NOW + 2,
            })
        }))
        .await;
        assert!(kept.iter().all(Result::is_ok), "{backend:?}: {kept:?}");

        for k in fresh.iter().chain([&running]) {
            assert_eq!(
                sql.lookup(k, NOW + 3).await.ok(),
                Some(Some(Record::Done(refusal()))),
                "{backend:?}: {}",
                k.key.as_str()
            );
        }
        assert_eq!(
            sql.lookup(&answered, NOW + 3).await.ok(),
            Some(Some(Record::Done(receipt("o-1")))),
            "{backend:?}"
        );
    }
}

/// After Redis lost a buyer's records and they were loaded again, a new key
/// proves nothing for one lease (an attempt that claimed it before the loss
/// may still commit), while a known sell-out still stands; after the lease
/// claims prove again, also on a clock a little behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_buyers_new_keys_prove_nothing_for_one_lease() {
    let s = redis_subject().await;
    let (redis, generation, _) = s.redis_parts();
    let buyer = BuyerId::parse(&uuid::Uuid::new_v4().to_string()).expect("buyer");
    assert_eq!(
        load(redis, generation, &buyer, &[], NOW).await,
        Loaded::Written
    );
    let lease = CLAIM_LEASE.as_millis() as i64;
    let claim = |key: &'static str, at: i64, answer: Option<StoredResponse>| {
        let (store, buyer) = (s.store.clone(), buyer.clone());
        async move {
            store
                .claim(
                    &scope(&buyer, key),
                    &hash(1),
                    &LeaseOwner::new(),
                    at,
                    answer.as_ref(),
                )
                .await
                .ok()
        }
    };
    assert_eq!(
        claim("early", NOW + lease - 1, None).await,
        Some(Claimed::Run(Proof::Unsettled))
    );
    assert_eq!(
        claim("known", NOW + 1, Some(refusal())).await,
        Some(Claimed::Answered),
        "a known sell-out stands"
    );
    assert_eq!(
        claim("settled", NOW + lease, None).await,
        Some(Claimed::Run(Proof::NoOrder))
    );
    assert_eq!(
        claim("after", NOW + 2, None).await,
        Some(Claimed::Run(Proof::NoOrder)),
        "the settled marker stays settled"
    );
}

/// A batch stores a known answer as one string, not as a claim's hash
/// (half the commands per sold-out answer). Every script and the lookup
/// read it as the done record it is: replays and reuses are answered from
/// it, nobody owns it, a refusal never replaces it and an order always does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_stored_by_a_batch_is_a_done_record_to_every_reader() {
    let s = redis_subject().await;
    let (redis, generation, test_redis) = s.redis_parts();
    let buyer = s.buyer().await;
    let mut conn = test_redis.connection().await;
    let mut answered = Vec::new();
    for key in ["b1", "b2", "b3"] {
        let k = scope(&buyer, key);
        let claimed = s
            .store
            .claim(&k, &hash(1), &LeaseOwner::new(), NOW, Some(&refusal()))
            .await;
        assert_eq!(claimed.ok(), Some(Claimed::Answered), "{key}");
        let record = redis_key(test_redis, &buyer, Some(key));
        let shape: String = redis::cmd("TYPE")
            .arg(&record)
            .query_async(&mut conn)
            .await
            .expect("type");
        assert_eq!(shape, "string", "{key}: this test reads the batch's shape");
        let ttl_ms: i64 = redis::cmd("PTTL")
            .arg(&record)
            .query_async(&mut conn)
            .await
            .expect("pttl");
        let ttl = TTL.as_millis() as i64;
        assert!(
            (ttl - 60_000..=ttl).contains(&ttl_ms),
            "{key}: ttl {ttl_ms} ms"
        );
        answered.push(k);
    }
    let [b1, b2, b3] = &answered[..] else {
        unreachable!("three keys were answered");
    };

    assert_eq!(
        s.store.lookup(b1, NOW + 1).await.ok(),
        Some(Some(Record::Done(refusal())))
    );
    let replay = s
        .store
        .claim(b1, &hash(1), &LeaseOwner::new(), NOW + 1, None)
        .await;
    assert!(
        matches!(replay, Ok(Claimed::Replay(ref r, _)) if *r == refusal()),
        "{replay:?}"
    );
    let reused = s
        .store
        .claim(b1, &hash(2), &LeaseOwner::new(), NOW + 1, None)
        .await;
    assert!(
        matches!(reused, Ok(Claimed::KeyReused(Some(ref r), _)) if *r == refusal()),
        "{reused:?}"
    );

    // Nobody owns it: abandon and step aside leave it as it is.
    let owner = LeaseOwner::new();
    s.store
        .abandon(b1, &hash(1), &owner)
        .await
        .expect("abandon");
    s.store
        .step_aside(b1, &hash(1), &owner)
        .await
        .expect("step aside");
    assert_eq!(
        s.store.lookup(b1, NOW + 2).await.ok(),
        Some(Some(Record::Done(refusal())))
    );

    // A refusal never replaces it; an order (a lost claim's, finishing
    // late) does.
    let late_refusal = s
        .store
        .finish(b1, &hash(1), &owner, &refusal(), NOW + 3)
        .await;
    assert_eq!(late_refusal.ok(), Some(Finished::NotOwner));
    let order = receipt("o-b1");
    let finished = s.store.finish(b1, &hash(1), &owner, &order, NOW + 3).await;
    assert_eq!(finished.ok(), Some(Finished::Stored));
    assert_eq!(
        s.store.lookup(b1, NOW + 4).await.ok(),
        Some(Some(Record::Done(order)))
    );

    // Loading the buyer's durable answers (the marker expired; the records
    // outlive it): an order replaces it, a refusal leaves it.
    lose(test_redis, &[redis_key(test_redis, &buyer, None)]).await;
    let loaded_order = receipt("o-b2");
    let durable = |k: &KeyScope, response: StoredResponse| DurableAnswer {
        key: k.key.clone(),
        hash: hash(1),
        response,
    };
    let kept = StoredResponse {
        status: 409,
        body: r#"{"code":"limit_reached","message":"limit","retryable":false}"#.into(),
    };
    assert_eq!(
        load(
            redis,
            generation,
            &buyer,
            &[durable(b2, loaded_order.clone()), durable(b3, kept)],
            NOW + 5,
        )
        .await,
        Loaded::Written
    );
    assert_eq!(
        s.store.lookup(b2, NOW + 6).await.ok(),
        Some(Some(Record::Done(loaded_order)))
    );
    assert_eq!(
        s.store.lookup(b3, NOW + 6).await.ok(),
        Some(Some(Record::Done(refusal())))
    );
}

/// A load reads the buyer's answers from the database, then writes them to
/// Redis. Here a refusal is kept (in the database and in Redis) after the
/// read, then Redis loses the buyer's records, then the load writes: it
/// must write nothing, or its marker would vouch for records that miss the
/// refusal, and a replay with another payload would be proven new and
/// ordered. The fault run's history checker caught that on PostgreSQL (a
/// 409 sold_out, then a 201 for the same key after a FLUSHALL). On main
/// before this test, the load wrote its marker and the replay ran anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_overtaken_by_a_redis_data_loss_writes_nothing() {
    let s = redis_subject().await;
    let (redis, generation, test_redis) = s.redis_parts();
    let sql = SqlRecords::new(s.db.clone(), TTL, true);
    let buyer = s.buyer().await;
    let k = scope(&buyer, "refused");
    let attempt = LeaseOwner::new();
    let claimed = s.store.claim(&k, &hash(1), &attempt, NOW, None).await;
    assert_eq!(claimed.ok(), Some(Claimed::Run(Proof::NoOrder)));

    // The buyer's marker expires; a claim of another key fences a load and
    // reads the database, which has nothing yet.
    let marker = redis_key(test_redis, &buyer, None);
    let record = redis_key(test_redis, &buyer, Some("refused"));
    lose(test_redis, std::slice::from_ref(&marker)).await;
    let current = generation.current().expect("a fresh generation reading");
    let overtaken = redis
        .fence_load(&buyer, current)
        .await
        .expect("fence")
        .expect("the buyer needs a load");
    let read_early = sql.durable_answers(&buyer, NOW + 1).await.expect("read");
    assert!(read_early.is_empty());

    // The first attempt is refused: kept in the database, then in Redis.
    sql.keep_durably(&[KeptRefusal {
        scope: k.clone(),
        hash: hash(1),
        response: refusal(),
        now_ms: NOW + 2,
    }])
    .await
    .expect("keep the refusal");
    let finished = s
        .store
        .finish(&k, &hash(1), &attempt, &refusal(), NOW + 2)
        .await;
    assert_eq!(finished.ok(), Some(Finished::Stored));

    // Redis loses the buyer's records, fence included; the load writes.
    lose(test_redis, &[marker, record]).await;
    assert_eq!(
        redis.load_buyer(overtaken, &read_early, NOW + 3).await.ok(),
        Some(Loaded::FenceGone)
    );

    // A replay with another payload, after the lease: the buyer must be
    // loaded again, and then hears that the key was used.
    let lease = CLAIM_LEASE.as_millis() as i64;
    let other = |at: i64| {
        let (store, k) = (s.store.clone(), k.clone());
        async move {
            store
                .claim(&k, &hash(2), &LeaseOwner::new(), at, None)
                .await
                .ok()
        }
    };
    assert_eq!(other(NOW + 4 + lease).await, Some(Claimed::LoadBuyer));
    let answers = sql.durable_answers(&buyer, NOW + 5).await.expect("read");
    assert_eq!(
        load(redis, generation, &buyer, &answers, NOW + 5).await,
        Loaded::Written
    );
    assert_eq!(
        other(NOW + 6 + lease).await,
        Some(Claimed::KeyReused(Some(refusal()), Proof::NoOrder))
    );
    let replay = s
        .store
        .claim(&k, &hash(1), &LeaseOwner::new(), NOW + 7 + lease, None)
        .await;
    assert_eq!(
        replay.ok(),
        Some(Claimed::Replay(refusal(), Proof::NoOrder))
    );
}

/// Loads under way share one fence (each read the database after it was
/// put); the first to write marks the buyer, the others write nothing, and
/// a buyer already marked needs no load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_under_way_share_one_fence_and_the_first_write_marks_the_buyer() {
    let s = redis_subject().await;
    let (redis, generation, _) = s.redis_parts();
    let buyer = BuyerId::parse(&uuid::Uuid::new_v4().to_string()).expect("buyer");
    let current = generation.current().expect("a fresh generation reading");
    let first = redis
        .fence_load(&buyer, current)
        .await
        .expect("fence")
        .expect("an unmarked buyer needs a load");
    let second = redis
        .fence_load(&buyer, current)
        .await
        .expect("fence")
        .expect("a load under way is not a marked buyer");
    assert_eq!(
        redis.load_buyer(second, &[], NOW).await.ok(),
        Some(Loaded::Written)
    );
    assert_eq!(
        redis.load_buyer(first, &[], NOW).await.ok(),
        Some(Loaded::FenceGone),
        "the buyer is marked already"
    );
    assert!(
        redis
            .fence_load(&buyer, current)
            .await
            .expect("fence")
            .is_none(),
        "a marked buyer needs no load"
    );
    let claimed = s
        .store
        .claim(
            &scope(&buyer, "new"),
            &hash(1),
            &LeaseOwner::new(),
            NOW + CLAIM_LEASE.as_millis() as i64,
            None,
        )
        .await;
    assert_eq!(claimed.ok(), Some(Claimed::Run(Proof::NoOrder)));
}
