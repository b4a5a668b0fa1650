//! Reads of the recovery tables: sequences, runs, messages and the suppression list.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::types::Json;

use crate::db::Db;
use crate::{fetch_all_db, fetch_optional_db};

/// A recovery sequence as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct SequenceRow {
    pub sequence_id: String,
    pub name: String,
    /// cart_abandoned, checkout_abandoned or browse_abandoned
    pub trigger_type: String,
    /// The normalised steps.
    #[schema(value_type = Vec<Object>)]
    pub steps: Json<Value>,
    pub active: bool,
    pub archived: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_position: i64,
}

const SEQUENCE_COLUMNS: &str = "sequence_id, name, trigger_type, steps, active, archived, \
    created_at, updated_at, last_position";

pub async fn list_sequences(
    db: &Db,
    include_archived: bool,
) -> Result<Vec<SequenceRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {SEQUENCE_COLUMNS} FROM recovery_sequences WHERE ($1 OR archived = false) \
         ORDER BY created_at, sequence_id"
    );
    fetch_all_db!(db, SequenceRow, &sql, include_archived)
}

pub async fn get_sequence(db: &Db, id: &str) -> Result<Option<SequenceRow>, sqlx::Error> {
    let sql = format!("SELECT {SEQUENCE_COLUMNS} FROM recovery_sequences WHERE sequence_id = $1");
    fetch_optional_db!(db, SequenceRow, &sql, id)
}

/// The sequence a trigger opens: the oldest active sequence with exactly that trigger, else
/// (for a checkout abandonment) the oldest active `cart_abandoned` one.
pub async fn sequence_for_trigger(
    db: &Db,
    trigger: &str,
) -> Result<Option<SequenceRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {SEQUENCE_COLUMNS} FROM recovery_sequences \
         WHERE active = true AND archived = false AND trigger_type IN ($1, 'cart_abandoned') \
         ORDER BY CASE WHEN trigger_type = $1 THEN 0 ELSE 1 END, created_at, sequence_id LIMIT 1"
    );
    fetch_optional_db!(db, SequenceRow, &sql, trigger)
}

/// A recovery run as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct RunRow {
    pub run_id: String,
    pub cart_id: String,
    pub sequence_id: String,
    /// pending, running, converted or stopped
    pub status: String,
    /// Why a stopped run stopped (completed, manual, unsubscribed, order_placed, …).
    pub stop_reason: Option<String>,
    /// Steps done (sent, or given up after three attempts).
    pub current_step: i32,
    pub total_steps: i32,
    pub next_due_at: Option<DateTime<Utc>>,
    pub claimed_at: Option<DateTime<Utc>>,
    pub abandoned_at: DateTime<Utc>,
    pub started_at: DateTime<Utc>,
    pub last_sent_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub converted_at: Option<DateTime<Utc>>,
    pub order_id: Option<String>,
    /// Revenue of the recovered order, minor units.
    pub revenue_recovered: i64,
    pub last_position: i64,
}

const RUN_COLUMNS: &str = "run_id, cart_id, sequence_id, status, stop_reason, current_step, \
    total_steps, next_due_at, claimed_at, abandoned_at, started_at, last_sent_at, updated_at, \
    converted_at, order_id, revenue_recovered, last_position";

/// Filters of `GET /recovery/runs`.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub status: Option<String>,
    pub cart_id: Option<String>,
    pub sequence_id: Option<String>,
    /// (started_at, run_id) of the last row of the previous page.
    pub after: Option<(DateTime<Utc>, String)>,
    pub limit: i64,
}

/// Runs, newest first.
pub async fn list_runs(db: &Db, f: &RunFilter) -> Result<Vec<RunRow>, sqlx::Error> {
    let (after_at, after_id) = match &f.after {
        Some((at, id)) => (Some(*at), Some(id.clone())),
        None => (None, None),
    };
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM recovery_runs \
         WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR cart_id = $2) \
           AND ($3 IS NULL OR sequence_id = $3) \
           AND ($4 IS NULL OR started_at < $4 OR (started_at = $4 AND run_id < $5)) \
         ORDER BY started_at DESC, run_id DESC LIMIT $6"
    );
    fetch_all_db!(
        db,
        RunRow,
        &sql,
        &f.status,
        &f.cart_id,
        &f.sequence_id,
        after_at,
        after_id,
        f.limit
    )
}

pub async fn get_run(db: &Db, id: &str) -> Result<Option<RunRow>, sqlx::Error> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM recovery_runs WHERE run_id = $1");
    fetch_optional_db!(db, RunRow, &sql, id)
}

/// A run a dispatcher looks at, with the steps it started with.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DueRun {
    #[sqlx(flatten)]
    pub run: RunRow,
    pub steps: Json<Vec<ocart_domain::recovery::Step>>,
}

/// Runs a dispatcher should look at now: pending ones due by `now`, and running ones whose
/// claim is older than `stale_before` (a dispatcher died holding it). Oldest due first, after
/// the keyset cursor `after` (`(next_due_at, run_id)` of the last run of the previous pass).
pub async fn due_runs(
    db: &Db,
    now: DateTime<Utc>,
    stale_before: DateTime<Utc>,
    after: Option<(DateTime<Utc>, String)>,
    limit: i64,
) -> Result<Vec<DueRun>, sqlx::Error> {
    let (after_at, after_id) = match after {
        Some((at, id)) => (Some(at), Some(id)),
        None => (None, None),
    };
    let sql = format!(
        "SELECT {RUN_COLUMNS}, steps FROM recovery_runs \
         WHERE ((status = 'pending' AND next_due_at <= $1) \
            OR (status = 'running' AND claimed_at <= $2)) \
           AND ($3 IS NULL OR next_due_at > $3 OR (next_due_at = $3 AND run_id > $4)) \
         ORDER BY next_due_at, run_id LIMIT $5"
    );
    fetch_all_db!(
        db,
        DueRun,
        &sql,
        now,
        stale_before,
        after_at,
        after_id,
        limit
    )
}

/// When the earliest pending run falls due.
pub async fn next_due(db: &Db) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let row: Option<(DateTime<Utc>,)> = fetch_optional_db!(
        db,
        (DateTime<Utc>,),
        "SELECT next_due_at FROM recovery_runs WHERE status = 'pending' \
         AND next_due_at IS NOT NULL ORDER BY next_due_at LIMIT 1"
    )?;
    Ok(row.map(|(at,)| at))
}

/// A run that can still send, and its cart.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OpenRun {
    pub run_id: String,
    pub cart_id: String,
}

/// Runs of a recipient (email or phone subject hash) that can still send.
pub async fn open_runs_of_recipient(
    db: &Db,
    recipient_hash: &str,
) -> Result<Vec<OpenRun>, sqlx::Error> {
    fetch_all_db!(
        db,
        OpenRun,
        "SELECT run_id, cart_id FROM recovery_runs WHERE (email_hash = $1 OR phone_hash = $1) \
         AND status IN ('pending', 'running')",
        recipient_hash
    )
}

/// One message of a run.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct NotificationRow {
    pub run_id: String,
    pub step: i32,
    pub attempt: i32,
    pub channel: String,
    pub template: String,
    /// queued, attempted, sent, failed, retry_queued, delivered or canceled
    pub status: String,
    pub message_key: String,
    pub due_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    pub updated_at: DateTime<Utc>,
}

pub async fn notifications_of_run(
    db: &Db,
    run_id: &str,
) -> Result<Vec<NotificationRow>, sqlx::Error> {
    fetch_all_db!(
        db,
        NotificationRow,
        "SELECT run_id, step, attempt, channel, template, status, message_key, due_at, error, \
         updated_at FROM recovery_notifications WHERE run_id = $1 ORDER BY step, attempt",
        run_id
    )
}

/// Whether a recipient (email or phone subject hash) is on the suppression list.
pub async fn is_suppressed(db: &Db, recipient_hash: &str) -> Result<bool, sqlx::Error> {
    Ok(!suppressed_among(db, &[recipient_hash]).await?.is_empty())
}

/// The cart facts the send guards need.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CartForSend {
    pub cart_id: String,
    pub status: String,
    pub erased: bool,
    pub email: Option<String>,
    pub email_hash: Option<String>,
    pub phone: Option<String>,
    pub phone_hash: Option<String>,
    pub name: Option<String>,
    pub currency: String,
    pub items: Json<Value>,
    pub total_minor: i64,
    pub abandoned_at: Option<DateTime<Utc>>,
    pub order_id: Option<String>,
}

impl CartForSend {
    /// The cart's lines. A row whose items are not cart items is an error naming the cart,
    /// never an empty cart (which would, say, let a subscription cart get a coupon).
    pub fn cart_items(&self) -> Result<Vec<ocart_domain::CartItem>, String> {
        serde_json::from_value(self.items.0.clone()).map_err(|e| {
            format!(
                "the carts row of cart {} holds items that are not cart items: {e}",
                self.cart_id
            )
        })
    }
}

pub async fn cart_for_send(db: &Db, cart_id: &str) -> Result<Option<CartForSend>, sqlx::Error> {
    Ok(carts_for_send(db, &[cart_id]).await?.pop())
}

/// `$first, $first+1, …`: one placeholder for each of `count` values.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs `$sql` (its lists written with [`placeholders`]) with the leading binds `$lead` and
/// then every value of `$list`, as rows of `$ty`.
macro_rules! fetch_list {
    ($db:expr, $ty:ty, $sql:expr, [$($lead:expr),*], $list:expr) => {
        match $db {
            Db::Pg(pool) => {
                let mut query = sqlx::query_as::<_, $ty>($sql)$(.bind($lead))*;
                for value in $list {
                    query = query.bind(value);
                }
                query.fetch_all(pool).await
            }
            Db::Lite(pool) => {
                let sql = crate::lite_sql($sql);
                let mut query = sqlx::query_as::<_, $ty>(&sql)$(.bind($lead))*;
                for value in $list {
                    query = query.bind(value);
                }
                query.fetch_all(pool).await
            }
        }
    };
}

/// The send-guard facts of many carts at once (a dispatcher pass).
pub async fn carts_for_send(db: &Db, cart_ids: &[&str]) -> Result<Vec<CartForSend>, sqlx::Error> {
    if cart_ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT cart_id, status, erased, email, email_hash, phone, phone_hash, name, currency, items, \
         total_minor, abandoned_at, order_id FROM carts WHERE cart_id IN ({})",
        placeholders(1, cart_ids.len())
    );
    fetch_list!(db, CartForSend, &sql, [], cart_ids)
}

/// Which of these recipients (email or phone subject hashes) are on the suppression list.
pub async fn suppressed_among(db: &Db, hashes: &[&str]) -> Result<Vec<String>, sqlx::Error> {
    if hashes.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT recipient_hash FROM suppression WHERE recipient_hash IN ({})",
        placeholders(1, hashes.len())
    );
    let rows: Vec<(String,)> = fetch_list!(db, (String,), &sql, [], hashes)?;
    Ok(rows.into_iter().map(|(h,)| h).collect())
}

/// Which of these shoppers (email subject hashes) bought after `since`: a paid order with
/// their email, or a cart of theirs converted (through another cart, or an order OCart heard
/// of only as a conversion).
pub async fn buyers_among(
    db: &Db,
    email_hashes: &[&str],
    since: DateTime<Utc>,
) -> Result<Vec<String>, sqlx::Error> {
    if email_hashes.is_empty() {
        return Ok(Vec::new());
    }
    let list = placeholders(2, email_hashes.len());
    let sql = format!(
        "SELECT email_hash FROM orders WHERE paid AND placed_at > $1 AND email_hash IN ({list}) \
         UNION SELECT email_hash FROM carts WHERE status = 'converted' AND converted_at > $1 \
         AND email_hash IN ({list})"
    );
    let rows: Vec<(String,)> = fetch_list!(db, (String,), &sql, [since], email_hashes)?;
    Ok(rows.into_iter().map(|(h,)| h).collect())
}

/// A run of a recipient, as the quiet-period rule looks at it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RecipientRun {
    pub run_id: String,
    pub email_hash: String,
    pub status: String,
    pub abandoned_at: DateTime<Utc>,
    pub last_sent_at: Option<DateTime<Utc>>,
}

/// The runs of these shoppers (email subject hashes) that can hold them (the quiet-period
/// rule): those still open, and those that sent after `since`.
pub async fn runs_of_recipients(
    db: &Db,
    email_hashes: &[&str],
    since: DateTime<Utc>,
) -> Result<Vec<RecipientRun>, sqlx::Error> {
    if email_hashes.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT run_id, email_hash, status, abandoned_at, last_sent_at FROM recovery_runs \
         WHERE email_hash IN ({}) AND (status IN ('pending', 'running') OR last_sent_at > $1)",
        placeholders(2, email_hashes.len())
    );
    fetch_list!(db, RecipientRun, &sql, [since], email_hashes)
}

/// The cart an order by this email (subject hash) most likely came from: the most recently
/// active open cart of theirs, active within the look-back window and created before the order.
pub async fn cart_of_buyer(
    db: &Db,
    email_hash: &str,
    since: DateTime<Utc>,
    placed_at: DateTime<Utc>,
) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(String,)> = fetch_optional_db!(
        db,
        (String,),
        "SELECT cart_id FROM carts WHERE email_hash = $1 AND status IN ('active', 'abandoned') \
         AND last_activity_at >= $2 AND created_at <= $3 \
         ORDER BY last_activity_at DESC, cart_id LIMIT 1",
        email_hash,
        since,
        placed_at
    )?;
    Ok(row.map(|(id,)| id))
}

/// The cart a recovery coupon was issued for (codes compare case-insensitively).
pub async fn cart_of_coupon(db: &Db, code: &str) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(String,)> = fetch_optional_db!(
        db,
        (String,),
        "SELECT cart_id FROM recovery_coupons WHERE code = $1",
        code.trim().to_ascii_uppercase()
    )?;
    Ok(row.map(|(id,)| id))
}

/// Whether a cart with this id was ever captured (and is still in the read table).
pub async fn cart_exists(db: &Db, cart_id: &str) -> Result<bool, sqlx::Error> {
    let row: Option<(String,)> = fetch_optional_db!(
        db,
        (String,),
        "SELECT cart_id FROM carts WHERE cart_id = $1",
        cart_id
    )?;
    Ok(row.is_some())
}

/// An order as the API shows it (no personal data: the buyer is a subject hash).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct OrderRow {
    pub order_id: String,
    pub status: String,
    pub paid: bool,
    pub payment_method: Option<String>,
    pub currency: String,
    /// The order total in minor units.
    pub total_minor: i64,
    pub placed_at: DateTime<Utc>,
    /// api or woocommerce
    pub source: String,
    /// The cart the order converted, if it matched one.
    pub cart_id: Option<String>,
    /// session, restore_token, cart_id, coupon or email
    pub matched_by: Option<String>,
    /// recovered or completed_before_abandonment
    pub outcome: Option<String>,
    pub updated_at: DateTime<Utc>,
}

pub async fn get_order(db: &Db, order_id: &str) -> Result<Option<OrderRow>, sqlx::Error> {
    fetch_optional_db!(
        db,
        OrderRow,
        "SELECT order_id, status, paid, payment_method, currency, total_minor, placed_at, source, \
         cart_id, matched_by, outcome, updated_at FROM orders WHERE order_id = $1",
        order_id
    )
}

/// Orders, newest first, after the keyset cursor `(placed_at, order_id)`.
pub async fn list_orders(
    db: &Db,
    before: Option<(DateTime<Utc>, String)>,
    limit: i64,
) -> Result<Vec<OrderRow>, sqlx::Error> {
    let (at, id) = match before {
        Some((at, id)) => (Some(at), Some(id)),
        None => (None, None),
    };
    fetch_all_db!(
        db,
        OrderRow,
        "SELECT order_id, status, paid, payment_method, currency, total_minor, placed_at, source, \
         cart_id, matched_by, outcome, updated_at FROM orders \
         WHERE ($1 IS NULL OR placed_at < $1 OR (placed_at = $1 AND order_id < $2)) \
         ORDER BY placed_at DESC, order_id DESC LIMIT $3",
        at,
        id,
        limit
    )
}

/// A link a message carried, found by the sha256 of its token.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LinkRow {
    pub token_hash: String,
    pub purpose: String,
    pub run_id: String,
    pub message_key: String,
    pub cart_id: String,
    pub channel: String,
    pub recipient_hash: Option<String>,
    pub created_at: DateTime<Utc>,
}

pub async fn link_by_hash(
    db: &Db,
    purpose: &str,
    token_hash: &str,
) -> Result<Option<LinkRow>, sqlx::Error> {
    fetch_optional_db!(
        db,
        LinkRow,
        "SELECT token_hash, purpose, run_id, message_key, cart_id, channel, recipient_hash, \
         created_at FROM recovery_links WHERE token_hash = $1 AND purpose = $2",
        token_hash,
        purpose
    )
}

/// A suppressed recipient (only its hash is kept).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct SuppressionRow {
    pub recipient_hash: String,
    /// email or sms, when the suppression came through one channel.
    pub channel: Option<String>,
    /// bounce, complaint, unsubscribe, manual or winback_failed
    pub reason: String,
    /// What caused it: a message key, a webhook, `admin`.
    pub source: Option<String>,
    pub created_at: DateTime<Utc>,
}

pub async fn list_suppression(db: &Db, limit: i64) -> Result<Vec<SuppressionRow>, sqlx::Error> {
    fetch_all_db!(
        db,
        SuppressionRow,
        "SELECT recipient_hash, channel, reason, source, created_at FROM suppression \
         ORDER BY created_at DESC, recipient_hash LIMIT $1",
        limit
    )
}

/// The runs of each of `cart_ids` that a cart event can still end or credit, as (cart_id,
/// run_id): those that can still send, and those that sent every step (an order after the
/// last message is still that run's recovery). One query for a whole batch of events.
pub async fn open_runs_of_carts(
    db: &Db,
    cart_ids: &[&str],
) -> Result<Vec<(String, String)>, sqlx::Error> {
    if cart_ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT cart_id, run_id FROM recovery_runs WHERE (status IN ('pending', 'running') \
         OR (status = 'stopped' AND stop_reason = 'completed')) AND cart_id IN ({})",
        placeholders(1, cart_ids.len())
    );
    fetch_list!(db, (String, String), &sql, [], cart_ids)
}

/// The store's order id and the cart it converted, of the order whose aggregate id is
/// `order_key`.
pub async fn order_of_key(
    db: &Db,
    order_key: &str,
) -> Result<Option<(String, Option<String>)>, sqlx::Error> {
    fetch_optional_db!(
        db,
        (String, Option<String>),
        "SELECT order_id, cart_id FROM orders WHERE order_key = $1",
        order_key
    )
}

/// Every run of `cart_id`, whatever its state (their aggregates decide what applies).
pub async fn runs_of_cart(db: &Db, cart_id: &str) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> = fetch_all_db!(
        db,
        (String,),
        "SELECT run_id FROM recovery_runs WHERE cart_id = $1 ORDER BY run_id",
        cart_id
    )?;
    Ok(rows.into_iter().map(|(r,)| r).collect())
}

/// A recovery coupon as the API shows it (the registry of the embedded mode, and the mirror
/// of coupons created in the store).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct CouponRow {
    pub code: String,
    pub cart_id: String,
    pub run_id: String,
    pub message_key: String,
    /// fixed_cart or percent
    pub kind: String,
    /// Minor units (fixed_cart) or a percentage (percent).
    pub amount: i64,
    pub currency: String,
    /// active, used or expired
    pub status: String,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub used_order_id: Option<String>,
    /// The coupon's id in the store.
    pub store_id: Option<i64>,
    #[serde(skip)]
    pub email_hash: Option<String>,
}

const COUPON_COLUMNS: &str = "code, cart_id, run_id, message_key, kind, amount, currency, status, \
    issued_at, expires_at, used_order_id, store_id, email_hash";

pub async fn coupon_by_code(db: &Db, code: &str) -> Result<Option<CouponRow>, sqlx::Error> {
    let sql = format!("SELECT {COUPON_COLUMNS} FROM recovery_coupons WHERE code = $1");
    fetch_optional_db!(db, CouponRow, &sql, code.trim().to_ascii_uppercase())
}

/// The cart's coupon still usable at `now` (one active coupon per cart).
pub async fn active_coupon_of_cart(
    db: &Db,
    cart_id: &str,
    now: DateTime<Utc>,
) -> Result<Option<CouponRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {COUPON_COLUMNS} FROM recovery_coupons WHERE cart_id = $1 AND status = 'active' \
         AND expires_at > $2 ORDER BY issued_at DESC LIMIT 1"
    );
    fetch_optional_db!(db, CouponRow, &sql, cart_id, now)
}

/// Unused coupons past their expiry, oldest first.
pub async fn expired_coupons(
    db: &Db,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<CouponRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {COUPON_COLUMNS} FROM recovery_coupons WHERE status = 'active' \
         AND expires_at <= $1 ORDER BY expires_at LIMIT $2"
    );
    fetch_all_db!(db, CouponRow, &sql, now, limit)
}

/// Coupons, newest first (`status` filters).
pub async fn list_coupons(
    db: &Db,
    status: Option<&str>,
    limit: i64,
) -> Result<Vec<CouponRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {COUPON_COLUMNS} FROM recovery_coupons WHERE ($1 IS NULL OR status = $1) \
         ORDER BY issued_at DESC, code LIMIT $2"
    );
    fetch_all_db!(db, CouponRow, &sql, status, limit)
}

/// A sent message, found by its message key.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MessageRow {
    pub run_id: String,
    pub channel: String,
    pub email_hash: Option<String>,
    pub phone_hash: Option<String>,
}

impl MessageRow {
    /// The recipient's subject hash on the message's channel.
    pub fn recipient_hash(&self) -> Option<&str> {
        if self.channel == "sms" {
            self.phone_hash.as_deref()
        } else {
            self.email_hash.as_deref()
        }
    }
}

pub async fn message_by_key(db: &Db, message_key: &str) -> Result<Option<MessageRow>, sqlx::Error> {
    fetch_optional_db!(
        db,
        MessageRow,
        "SELECT n.run_id, n.channel, r.email_hash, r.phone_hash FROM recovery_notifications n \
         JOIN recovery_runs r ON r.run_id = n.run_id WHERE n.message_key = $1 LIMIT 1",
        message_key
    )
}

/// A row of the deliverability feed.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct DeliverabilityRow {
    /// The log position of the event it came from (the feed's cursor).
    pub position: i64,
    /// send, delivery, open, click, bounce, complaint or unsubscribe
    pub kind: String,
    pub run_id: Option<String>,
    pub message_key: Option<String>,
    pub channel: Option<String>,
    /// The recipient's subject hash (never the address).
    pub recipient_hash: Option<String>,
    pub detail: Option<String>,
    pub at: DateTime<Utc>,
}

/// The feed, newest first, before position `before`.
pub async fn list_deliverability(
    db: &Db,
    kind: Option<&str>,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<DeliverabilityRow>, sqlx::Error> {
    fetch_all_db!(
        db,
        DeliverabilityRow,
        "SELECT position, kind, run_id, message_key, channel, recipient_hash, detail, at \
         FROM deliverability_events WHERE ($1 IS NULL OR kind = $1) AND ($2 IS NULL OR position < $2) \
         ORDER BY position DESC LIMIT $3",
        kind,
        before,
        limit
    )
}

/// A saved template.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct TemplateRow {
    pub template_id: String,
    pub subject: String,
    pub preheader: String,
    pub html: String,
    pub text: String,
    pub sms: String,
    pub updated_at: DateTime<Utc>,
}

pub async fn get_template(db: &Db, id: &str) -> Result<Option<TemplateRow>, sqlx::Error> {
    fetch_optional_db!(
        db,
        TemplateRow,
        "SELECT template_id, subject, preheader, html, text, sms, updated_at \
         FROM recovery_templates WHERE template_id = $1",
        id
    )
}

pub async fn list_templates(db: &Db) -> Result<Vec<TemplateRow>, sqlx::Error> {
    fetch_all_db!(
        db,
        TemplateRow,
        "SELECT template_id, subject, preheader, html, text, sms, updated_at \
         FROM recovery_templates ORDER BY template_id"
    )
}
