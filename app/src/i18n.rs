//! Every string the shopper pages show, in English and Simplified Chinese.
//!
//! The server picks the language from the `lang` cookie (set by the visible
//! switch) or else `Accept-Language`, and writes it into `<html lang>`; the
//! hydrating browser reads it back from there, so both sides render the same
//! markup.

use crate::model::{ErrorCode, OrderStatus};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    #[default]
    En,
    ZhCn,
}

impl Lang {
    pub const ALL: [Lang; 2] = [Lang::En, Lang::ZhCn];

    /// The BCP 47 tag written into `<html lang>` and the `lang` cookie.
    pub fn tag(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::ZhCn => "zh-CN",
        }
    }

    /// The language's name in itself, for the switch.
    pub fn native_name(self) -> &'static str {
        match self {
            Lang::En => "English",
            Lang::ZhCn => "简体中文",
        }
    }

    /// Reads a tag as written by [`Lang::tag`], leniently.
    pub fn from_tag(tag: &str) -> Option<Lang> {
        let tag = tag.trim().to_ascii_lowercase();
        if tag == "en" || tag.starts_with("en-") {
            Some(Lang::En)
        } else if tag == "zh" || tag.starts_with("zh-") {
            Some(Lang::ZhCn)
        } else {
            None
        }
    }

    /// The best supported language of an `Accept-Language` header, by quality.
    pub fn negotiate(accept_language: &str) -> Lang {
        let mut best: Option<(f32, Lang)> = None;
        for part in accept_language.split(',') {
            let mut pieces = part.split(';');
            let tag = pieces.next().unwrap_or_default();
            let quality = pieces
                .find_map(|p| p.trim().strip_prefix("q="))
                .and_then(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            if let Some(lang) = Lang::from_tag(tag)
                && best.is_none_or(|(q, _)| quality > q)
            {
                best = Some((quality, lang));
            }
        }
        best.map(|(_, lang)| lang).unwrap_or_default()
    }

    pub fn strings(self) -> &'static Strings {
        match self {
            Lang::En => &EN,
            Lang::ZhCn => &ZH_CN,
        }
    }
}

/// One language's strings. Formatting helpers below take numbers and ids.
pub struct Strings {
    pub site_name: &'static str,
    pub tagline: &'static str,
    pub items_heading: &'static str,
    pub no_items: &'static str,
    pub condition: &'static str,
    pub seller: &'static str,
    pub price: &'static str,
    pub stock_left: &'static str,
    pub sold_out_badge: &'static str,
    pub quantity: &'static str,
    pub buy: &'static str,
    pub buying: &'static str,
    pub buy_again: &'static str,
    pub retry: &'static str,
    pub checking: &'static str,
    pub order_placed: &'static str,
    pub order_id: &'static str,
    pub total: &'static str,
    pub back_to_list: &'static str,
    pub language: &'static str,
    pub load_failed: &'static str,
    pub outcome_unknown: &'static str,
    pub waiting_visible: &'static str,
    pub dashboard: &'static str,
    pub admin_token: &'static str,
    pub sign_in: &'static str,
    pub sign_out: &'static str,
    pub wrong_token: &'static str,
    pub throughput: &'static str,
    pub latency_p99: &'static str,
    pub lua_success: &'static str,
    pub db_conflict: &'static str,
    pub intercept_rate: &'static str,
    pub hot_items: &'static str,
    pub orders_created: &'static str,
    pub intercepts_total: &'static str,
    pub live: &'static str,
    pub my_orders: &'static str,
    pub no_orders: &'static str,
    pub status: &'static str,
    pub pay: &'static str,
    pub payment_closed: &'static str,
    pub demo_checkout: &'static str,
    pub demo_checkout_notice: &'static str,
    pub pay_demo: &'static str,
    pub not_payable: &'static str,
    pub payment_refused: &'static str,
    pub payments_heading: &'static str,
    pub paid_on_time: &'static str,
    pub paid_late: &'static str,
    pub units_returned: &'static str,
    pub resale_p50: &'static str,
    pub not_on_sale_yet: &'static str,
    pub sale_ended: &'static str,
    pub join_line: &'static str,
    pub line_before_draw: &'static str,
    pub line_admitted: &'static str,
    pub line_sold_out: &'static str,
    pub line_paused: &'static str,
    pub fairness_rule: &'static str,
    pub fairness_link: &'static str,
    pub refreshes_itself: &'static str,
    pub drops_heading: &'static str,
    pub line_waiting: &'static str,
    pub admitted_per_second: &'static str,
    pub admitted_total: &'static str,
    pub passes_open: &'static str,
    pub passes_used: &'static str,
    pub passes_expired: &'static str,
}

impl Strings {
    fn is_zh(&self) -> bool {
        std::ptr::eq(self, &ZH_CN)
    }

    /// An order's status as the shopper reads it.
    pub fn status_label(&self, status: OrderStatus) -> &'static str {
        match (status, self.is_zh()) {
            (OrderStatus::Confirmed, false) => "Confirmed",
            (OrderStatus::Confirmed, true) => "已确认",
            (OrderStatus::AwaitingPayment, false) => "Awaiting payment",
            (OrderStatus::AwaitingPayment, true) => "待支付",
            (OrderStatus::Paid, false) => "Paid",
            (OrderStatus::Paid, true) => "已支付",
            (OrderStatus::Expired, false) => "Expired: not paid in time, back on sale",
            (OrderStatus::Expired, true) => "已过期:未按时支付,商品已重新上架",
            (OrderStatus::RefundDue, false) => "Paid after the deadline: refund due",
            (OrderStatus::RefundDue, true) => "超时支付:待退款",
        }
    }

    /// The time left to pay, to the second; "time is over" at zero.
    pub fn time_left(&self, ms: i64) -> String {
        if ms <= 0 {
            return self.payment_closed.to_owned();
        }
        let seconds = (ms + 999) / 1000;
        let (minutes, seconds) = (seconds / 60, seconds % 60);
        if self.is_zh() {
            format!("剩余 {minutes} 分 {seconds:02} 秒")
        } else {
            format!("{minutes} min {seconds:02} s left")
        }
    }

    /// A span of time to the second, "1 h 02 min 05 s" (hours only when
    /// there are any).
    fn span(&self, ms: i64) -> String {
        let seconds = (ms.max(0) + 999) / 1000;
        let (hours, minutes, seconds) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
        match (hours, self.is_zh()) {
            (0, false) => format!("{minutes} min {seconds:02} s"),
            (0, true) => format!("{minutes} 分 {seconds:02} 秒"),
            (_, false) => format!("{hours} h {minutes:02} min {seconds:02} s"),
            (_, true) => format!("{hours} 小时 {minutes:02} 分 {seconds:02} 秒"),
        }
    }

    /// The countdown to the sale's start.
    pub fn opens_in(&self, ms: i64) -> String {
        if self.is_zh() {
            format!("距开售还有 {}", self.span(ms))
        } else {
            format!("Sale opens in {}", self.span(ms))
        }
    }

    /// Where a waiting buyer stands, and roughly how long until their turn.
    pub fn line_position(&self, position: u64, eta_seconds: Option<u64>) -> String {
        let wait =
            eta_seconds.map(|eta| self.span(i64::try_from(eta).unwrap_or(i64::MAX / 2) * 1000));
        match (wait, self.is_zh()) {
            (Some(wait), false) => {
                format!("You are number {position} in line: about {wait} to wait.")
            }
            (Some(wait), true) => format!("您排在第 {position} 位,预计等待 {wait}。"),
            (None, false) => format!("You are number {position} in line."),
            (None, true) => format!("您排在第 {position} 位。"),
        }
    }

    /// How long an admitted buyer's pass stays valid.
    pub fn pass_valid_for(&self, ms: i64) -> String {
        match (ms > 0, self.is_zh()) {
            (true, false) => format!("Your pass is valid for {}.", self.span(ms)),
            (true, true) => format!("通行证剩余有效时间 {}。", self.span(ms)),
            (false, false) => "Your pass has run out.".to_owned(),
            (false, true) => "通行证已过期。".to_owned(),
        }
    }

    /// The shopper-facing sentence for a refusal; never the server's raw text.
    pub fn error_message(&self, code: ErrorCode) -> &'static str {
        match (code, self.is_zh()) {
            (ErrorCode::SoldOut, false) => "Sold out: every unit has been bought.",
            (ErrorCode::SoldOut, true) => "已售罄:所有库存都已售出。",
            (ErrorCode::StockConflict, false) => {
                "Many people are buying this right now. Please try again."
            }
            (ErrorCode::StockConflict, true) => "当前抢购人数过多,请重试。",
            (ErrorCode::LimitExceeded, false) => "You have reached the limit for this item.",
            (ErrorCode::LimitExceeded, true) => "您已达到该商品的限购数量。",
            (ErrorCode::RequestInProgress, false) => "Your order is still being processed.",
            (ErrorCode::RequestInProgress, true) => "您的订单仍在处理中。",
            (ErrorCode::UnknownItem | ErrorCode::NotFound, false) => "This item does not exist.",
            (ErrorCode::UnknownItem | ErrorCode::NotFound, true) => "该商品不存在。",
            (ErrorCode::Unavailable | ErrorCode::Internal, false) => {
                "The shop is busy. Your order was not taken; please try again."
            }
            (ErrorCode::Unavailable | ErrorCode::Internal, true) => "系统繁忙,订单未提交,请重试。",
            (ErrorCode::RateLimited, false) => "Too many attempts. Please wait a moment.",
            (ErrorCode::RateLimited, true) => "操作过于频繁,请稍候。",
            (ErrorCode::Unauthorized, false) => "Your session expired. Please reload the page.",
            (ErrorCode::Unauthorized, true) => "会话已过期,请刷新页面。",
            (ErrorCode::SaleNotStarted, false) => "The sale has not opened yet.",
            (ErrorCode::SaleNotStarted, true) => "尚未开售。",
            (ErrorCode::SaleEnded, false) => "This sale has ended.",
            (ErrorCode::SaleEnded, true) => "本次销售已结束。",
            (ErrorCode::QueuePassRequired | ErrorCode::NotInQueue, false) => {
                "This drop has a line: join it, and buy when it is your turn."
            }
            (ErrorCode::QueuePassRequired | ErrorCode::NotInQueue, true) => {
                "本商品需要排队:请先排队,轮到您时再购买。"
            }
            (ErrorCode::QueuePassInvalid, false) => {
                "Your pass is not valid (any more). Reload the page to see where you stand."
            }
            (ErrorCode::QueuePassInvalid, true) => "通行证无效或已过期,请刷新页面查看排队状态。",
            (_, false) => "The order could not be placed.",
            (_, true) => "无法下单。",
        }
    }
}

/// Money as the pages show it: `¥12.50`.
pub fn format_price(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let cents = cents.unsigned_abs();
    format!("{sign}¥{}.{:02}", cents / 100, cents % 100)
}

static EN: Strings = Strings {
    site_name: "Oversell Guard Market",
    tagline: "Second-hand finds, sold once.",
    items_heading: "Items",
    no_items: "Nothing for sale right now.",
    condition: "Condition",
    seller: "Seller",
    price: "Price",
    stock_left: "Left",
    sold_out_badge: "Sold out",
    quantity: "Quantity",
    buy: "Buy now",
    buying: "Placing order…",
    buy_again: "Buy again",
    retry: "Try again",
    checking: "Checking your order…",
    order_placed: "Order placed",
    order_id: "Order",
    total: "Total",
    back_to_list: "All items",
    language: "Language",
    load_failed: "Could not load this page. Please reload.",
    outcome_unknown: "We could not confirm your order yet. Trying again keeps the same order.",
    waiting_visible: "Will check your order when you come back to this page.",
    dashboard: "Dashboard",
    admin_token: "Admin token",
    sign_in: "Sign in",
    sign_out: "Sign out",
    wrong_token: "That token is not right.",
    throughput: "Orders per second",
    latency_p99: "Order latency p99 (ms)",
    lua_success: "Lua reservation success (%)",
    db_conflict: "Database conflict rate (%)",
    intercept_rate: "Browser intercept rate (%)",
    hot_items: "Hottest items (requests/s)",
    orders_created: "Orders created",
    intercepts_total: "Taps intercepted",
    live: "Live, refreshed every 2 s",
    my_orders: "My orders",
    no_orders: "You have no orders yet.",
    status: "Status",
    pay: "Pay",
    payment_closed: "Time to pay is over",
    demo_checkout: "Demo checkout",
    demo_checkout_notice: "This is a demo payment page: no money moves. Paying sends the same signed webhook a real payment provider would send.",
    pay_demo: "Pay (demo)",
    not_payable: "This order cannot be paid here (any more).",
    payment_refused: "The payment was not accepted. Please try again.",
    payments_heading: "Payments",
    paid_on_time: "Paid on time",
    paid_late: "Paid late (refund due)",
    units_returned: "Units returned by expiry",
    resale_p50: "Expiry to resale, median (s)",
    not_on_sale_yet: "Not on sale yet",
    sale_ended: "This sale has ended.",
    join_line: "Join the line",
    line_before_draw: "You are in the line. When the sale opens, everyone who joined before it is put in a random order; your place follows.",
    line_admitted: "It's your turn: buy before your pass runs out.",
    line_sold_out: "Sold out: the last unit has just been bought. Thank you for waiting.",
    line_paused: "The line is paused for a moment; your place is kept.",
    fairness_rule: "Everyone who joins the line before the sale opens is put in a random order, drawn from a seed whose SHA-256 fingerprint is published in advance and revealed at the start; later arrivals follow in order of arrival.",
    fairness_link: "Check the draw",
    refreshes_itself: "This page refreshes itself.",
    drops_heading: "Drops (waiting rooms)",
    line_waiting: "Waiting",
    admitted_per_second: "Admitted/s",
    admitted_total: "Admitted",
    passes_open: "Passes open",
    passes_used: "Passes used",
    passes_expired: "Passes expired",
};

static ZH_CN: Strings = Strings {
    site_name: "防超卖二手市场",
    tagline: "二手好物,每件只卖一次。",
    items_heading: "商品",
    no_items: "暂无在售商品。",
    condition: "成色",
    seller: "卖家",
    price: "价格",
    stock_left: "剩余",
    sold_out_badge: "已售罄",
    quantity: "数量",
    buy: "立即购买",
    buying: "正在下单…",
    buy_again: "再买一件",
    retry: "重试",
    checking: "正在查询订单…",
    order_placed: "下单成功",
    order_id: "订单号",
    total: "合计",
    back_to_list: "全部商品",
    language: "语言",
    load_failed: "页面加载失败,请刷新。",
    outcome_unknown: "暂时无法确认订单结果。重试不会重复下单。",
    waiting_visible: "回到本页面后将自动查询订单结果。",
    dashboard: "看板",
    admin_token: "管理员令牌",
    sign_in: "登录",
    sign_out: "退出",
    wrong_token: "令牌不正确。",
    throughput: "每秒订单数",
    latency_p99: "下单延迟 p99(毫秒)",
    lua_success: "Lua 预占成功率(%)",
    db_conflict: "数据库乐观锁冲突率(%)",
    intercept_rate: "前端防重拦截率(%)",
    hot_items: "热门商品(请求/秒)",
    orders_created: "已创建订单",
    intercepts_total: "已拦截点击",
    live: "实时,每 2 秒刷新",
    my_orders: "我的订单",
    no_orders: "您还没有订单。",
    status: "状态",
    pay: "去支付",
    payment_closed: "支付时间已过",
    demo_checkout: "演示收银台",
    demo_checkout_notice: "这是演示支付页面,不会产生真实扣款。支付后将发送与真实支付服务商相同的签名回调。",
    pay_demo: "支付(演示)",
    not_payable: "该订单无法在此支付(或已无法支付)。",
    payment_refused: "支付未被接受,请重试。",
    payments_heading: "支付",
    paid_on_time: "按时支付",
    paid_late: "超时支付(待退款)",
    units_returned: "过期退回件数",
    resale_p50: "过期到再售出,中位数(秒)",
    not_on_sale_yet: "尚未开售",
    sale_ended: "本次销售已结束。",
    join_line: "排队",
    line_before_draw: "您已在队列中。开售时,开售前加入的所有人将被随机排序,届时显示您的位置。",
    line_admitted: "轮到您了:请在通行证过期前购买。",
    line_sold_out: "已售罄:最后一件刚刚售出,感谢您的等候。",
    line_paused: "排队暂停片刻,您的位置保留。",
    fairness_rule: "开售前加入队列的人按随机顺序排列,随机种子的 SHA-256 指纹提前公布、开售时揭晓;之后加入的人按到达顺序排在后面。",
    fairness_link: "核验抽签",
    refreshes_itself: "本页会自动刷新。",
    drops_heading: "限时发售(排队)",
    line_waiting: "排队中",
    admitted_per_second: "放行/秒",
    admitted_total: "已放行",
    passes_open: "有效通行证",
    passes_used: "已用通行证",
    passes_expired: "过期通行证",
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_language_picks_the_best_supported_language() {
        assert_eq!(Lang::negotiate("zh-CN,zh;q=0.9,en;q=0.8"), Lang::ZhCn);
        assert_eq!(Lang::negotiate("en-US,en;q=0.9,zh;q=0.8"), Lang::En);
        assert_eq!(Lang::negotiate("fr-FR,zh;q=0.5"), Lang::ZhCn);
        assert_eq!(Lang::negotiate("de"), Lang::En);
        assert_eq!(Lang::negotiate(""), Lang::En);
    }

    #[test]
    fn tags_round_trip() {
        for lang in Lang::ALL {
            assert_eq!(Lang::from_tag(lang.tag()), Some(lang));
        }
    }

    #[test]
    fn prices_show_two_decimals() {
        assert_eq!(format_price(1250), "¥12.50");
        assert_eq!(format_price(5), "¥0.05");
        assert_eq!(format_price(0), "¥0.00");
    }

    #[test]
    fn the_time_left_counts_down_to_the_second_in_both_languages() {
        assert_eq!(Lang::En.strings().time_left(65_000), "1 min 05 s left");
        assert_eq!(Lang::En.strings().time_left(64_001), "1 min 05 s left");
        assert_eq!(Lang::ZhCn.strings().time_left(5_000), "剩余 0 分 05 秒");
        assert_eq!(Lang::En.strings().time_left(0), "Time to pay is over");
        assert_eq!(Lang::ZhCn.strings().time_left(-3), "支付时间已过");
    }

    #[test]
    fn drop_day_sentences_read_in_both_languages() {
        let (en, zh) = (Lang::En.strings(), Lang::ZhCn.strings());
        assert_eq!(en.opens_in(65_000), "Sale opens in 1 min 05 s");
        assert_eq!(en.opens_in(3_725_000), "Sale opens in 1 h 02 min 05 s");
        assert_eq!(zh.opens_in(5_000), "距开售还有 0 分 05 秒");
        assert_eq!(
            en.line_position(12, Some(30)),
            "You are number 12 in line: about 0 min 30 s to wait."
        );
        assert_eq!(zh.line_position(3, None), "您排在第 3 位。");
        assert_eq!(en.pass_valid_for(0), "Your pass has run out.");
        assert_eq!(zh.pass_valid_for(61_000), "通行证剩余有效时间 1 分 01 秒。");
        for code in [
            ErrorCode::SaleNotStarted,
            ErrorCode::SaleEnded,
            ErrorCode::QueuePassRequired,
            ErrorCode::QueuePassInvalid,
        ] {
            assert_ne!(
                en.error_message(code),
                en.error_message(ErrorCode::Internal)
            );
            assert_ne!(
                zh.error_message(code),
                zh.error_message(ErrorCode::Internal)
            );
        }
    }

    #[test]
    fn every_status_reads_differently_in_each_language() {
        for status in OrderStatus::ALL {
            assert_ne!(
                Lang::En.strings().status_label(status),
                Lang::ZhCn.strings().status_label(status)
            );
        }
    }

    #[test]
    fn both_languages_translate_the_purchase_errors() {
        for code in [
            ErrorCode::SoldOut,
            ErrorCode::StockConflict,
            ErrorCode::LimitExceeded,
        ] {
            assert_ne!(
                Lang::En.strings().error_message(code),
                Lang::ZhCn.strings().error_message(code)
            );
        }
    }
}
