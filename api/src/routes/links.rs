//! The links in recovery messages, for shoppers (public, rate limited, HTML). `GET /r/{token}`
//! restores the cart: it records the click and its outcome on the run and redirects (303) to
//! the store's checkout with the cart rebuilt from the log, in the URL itself, so it works on
//! any device and needs no cookie; expired, erased or unknown links get a friendly page.
//! `GET /u/{token}`
//! shows an unsubscribe confirmation (a GET changes nothing, so link scanners and prefetchers
//! cannot unsubscribe anyone); `POST /u/{token}` — the form's button, or the RFC 8058 one-click
//! POST a mail client sends with `List-Unsubscribe=One-Click` — suppresses the recipient and
//! stops every run that messages them. Unknown or malformed tokens get a friendly page.
//!
//! Rate limits: restore and the pixel each have a per-IP budget; an unsubscribe link has its
//! own budget per token and is never refused because of the IP (RFC 8058: mailbox providers
//! send one-click POSTs from shared addresses); a token that is no link of ours counts against
//! the client IP's restore budget, so guessing stays limited.

use axum::extract::State;
use axum::http::header;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{Html, IntoResponse, Response};
use ocart_domain::recovery::{DeliveryKind, DeliveryReport, RestoreFailure};
use ocart_projections::queries::recovery::{self as q, LinkRow};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::extract::Path;
use crate::ratelimit::{self, Bucket};
use crate::state::{AppState, RequestContext};
use crate::usecases;
use crate::usecases::restore::Restore;
use crate::usecases::unsubscribe::Unsubscribed;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router(state: &AppState) -> OpenApiRouter<AppState> {
    let per_ip =
        |bucket| middleware::from_fn_with_state((state.clone(), bucket), ratelimit::per_ip);
    OpenApiRouter::new()
        .merge(
            OpenApiRouter::new()
                .routes(routes!(restore))
                .route_layer(per_ip(Bucket::Restore)),
        )
        .merge(
            OpenApiRouter::new()
                .routes(routes!(open_pixel))
                .route_layer(per_ip(Bucket::Pixel)),
        )
        .routes(routes!(unsubscribe_page, unsubscribe))
}

/// The token of a link in a message (anything else gets the "not valid" page).
const TOKEN: &str = "The link's token, as the message carries it";

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{title}</title></head>\
         <body style=\"font-family:sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem\">\
         <h1 style=\"font-size:1.4rem\">{title}</h1>{body}</body></html>"
    );
    (status, Html(html)).into_response()
}

fn not_found() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "This link is not valid",
        "<p>The link may be incomplete. If you copied it from an email, copy the whole link, \
         or use the unsubscribe link in the email again.</p>",
    )
}

fn well_formed(token: &str) -> bool {
    (20..=100).contains(&token.len())
        && token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Restores the cart of a recovery message and sends the shopper to the checkout.
#[utoipa::path(get, path = "/r/{token}", tag = "links",
    params(("token" = String, Path, description = TOKEN)),
    responses(
        (status = 303, description = "To the store's checkout with the cart rebuilt",
            headers(("Location" = String, description = "The checkout URL"))),
        (status = 200, description = "The cart became an order, or nothing in it is for sale any more", content_type = "text/html", body = String),
        (status = 404, description = "The link is not one of ours", content_type = "text/html", body = String),
        (status = 410, description = "The link has expired or its cart was erased", content_type = "text/html", body = String),
        (status = 429, description = "Rate limited by client IP; see Retry-After"),
        (status = 503, description = "The store is unavailable; see Retry-After"),
    ))]
pub async fn restore(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    if !well_formed(&token) {
        metrics::counter!("ocart_restore_failed_total", "reason" => "unknown").increment(1);
        return Ok(not_found());
    }
    let meta = ctx.meta("public:restore".into(), &state);
    let store = html_escape(&state.core.config.recovery.store_name);
    let reply = match usecases::restore::restore(&state.core, &token, &meta).await? {
        Restore::Redirect { location, .. } => (
            StatusCode::SEE_OTHER,
            [
                (header::LOCATION, location),
                (header::CACHE_CONTROL, "no-store".to_owned()),
                (header::REFERRER_POLICY, "no-referrer".to_owned()),
            ],
        )
            .into_response(),
        Restore::Unknown => not_found(),
        Restore::Failed(RestoreFailure::Expired) => page(
            StatusCode::GONE,
            "This link has expired",
            &format!(
                "<p>Links in cart reminders work for a limited time. Your cart at {store} \
                      may still be waiting: visit the store to pick up where you left off.</p>"
            ),
        ),
        Restore::Failed(RestoreFailure::CartErased) => page(
            StatusCode::GONE,
            "This cart is no longer available",
            &format!(
                "<p>The cart this link saved has been removed. You are welcome to start \
                      again at {store}.</p>"
            ),
        ),
        Restore::Failed(RestoreFailure::AlreadyOrdered) => page(
            StatusCode::OK,
            "You have already ordered",
            &format!(
                "<p>This cart has already become an order. Thank you for shopping at \
                      {store}!</p>"
            ),
        ),
        Restore::Failed(RestoreFailure::Unavailable) => page(
            StatusCode::OK,
            "These items are no longer available",
            &format!(
                "<p>Sorry: nothing in this cart is for sale any more. Have a look at \
                      what else {store} has.</p>"
            ),
        ),
    };
    Ok(reply)
}

/// A transparent 1×1 GIF.
const PIXEL: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// The open-tracking pixel of an email: records the first open, always answers the image.
#[utoipa::path(get, path = "/o/{token}", tag = "links",
    params(("token" = String, Path, description = TOKEN)),
    responses(
        (status = 200, description = "A transparent 1×1 GIF", content_type = "image/gif", body = Vec<u8>),
        (status = 429, description = "Rate limited by client IP; see Retry-After"),
    ))]
pub async fn open_pixel(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    if let Some(link) = link(&state, "open", &token).await? {
        let meta = ctx.meta("public:open".into(), &state);
        let report = DeliveryReport {
            kind: DeliveryKind::Opened,
            hard: false,
            provider_id: None,
            detail: None,
        };
        crate::usecases::report_delivery::report_delivery(
            &state.core,
            &link.message_key,
            report,
            &meta,
        )
        .await?;
    }
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "image/gif"),
            (header::CACHE_CONTROL, "no-store, max-age=0"),
        ],
        PIXEL,
    )
        .into_response())
}

/// The link a token names, if it is one of ours.
async fn link(state: &AppState, purpose: &str, token: &str) -> Result<Option<LinkRow>, ApiError> {
    if !well_formed(token) {
        return Ok(None);
    }
    let hash = hex::encode(Sha256::digest(token.as_bytes()));
    Ok(q::link_by_hash(&state.core.db, purpose, &hash).await?)
}

/// The unsubscribe link `token` names, under the rate limits of unsubscribe links: a link of
/// ours counts against its own budget only, whatever the client IP; a token that is no link
/// of ours counts against the client IP's link budget (so guessing is limited, while a real
/// unsubscribe is never refused because of the address it comes from, and the per-link table
/// holds only real links).
async fn unsubscribe_link(
    state: &AppState,
    ctx: &RequestContext,
    token: &str,
) -> Result<Option<LinkRow>, ApiError> {
    let found = if well_formed(token) {
        usecases::unsubscribe::find_link(&state.core, token).await?
    } else {
        None
    };
    match found {
        Some(found) => {
            state.limiter.check_unsubscribe(token)?;
            Ok(Some(found))
        }
        None => {
            state
                .limiter
                .check(Bucket::Restore, ctx.ip)
                .map_err(ApiError::RateLimited)?;
            Ok(None)
        }
    }
}

/// The unsubscribe confirmation page (changes nothing).
#[utoipa::path(get, path = "/u/{token}", tag = "links",
    params(("token" = String, Path, description = TOKEN)),
    responses(
        (status = 200, description = "The confirmation form", content_type = "text/html", body = String),
        (status = 404, description = "The link is not one of ours", content_type = "text/html", body = String),
        (status = 429, description = "Rate limited: by link, or by client IP for a token that is no link of ours"),
        (status = 503, description = "The store is unavailable; see Retry-After"),
    ))]
pub async fn unsubscribe_page(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    if unsubscribe_link(&state, &ctx, &token).await?.is_none() {
        return Ok(not_found());
    }
    let store = html_escape(&state.core.config.recovery.store_name);
    Ok(page(
        StatusCode::OK,
        "Unsubscribe from cart reminders",
        &format!(
            "<p>Stop reminders about your cart from {store}?</p>\
             <form method=\"post\"><button type=\"submit\" \
             style=\"padding:.6rem 1.2rem;font-size:1rem\">Unsubscribe</button></form>"
        ),
    ))
}

/// Unsubscribes: the confirmation form's POST or the RFC 8058 one-click POST (any body, or
/// none, is ignored).
#[utoipa::path(post, path = "/u/{token}", tag = "links",
    params(("token" = String, Path, description = TOKEN)),
    responses(
        (status = 200, description = "Unsubscribed", content_type = "text/html", body = String),
        (status = 404, description = "The link is not one of ours", content_type = "text/html", body = String),
        (status = 429, description = "Rate limited: by link, or by client IP for a token that is no link of ours"),
        (status = 503, description = "The store is unavailable; see Retry-After"),
    ))]
pub async fn unsubscribe(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    let Some(link) = unsubscribe_link(&state, &ctx, &token).await? else {
        return Ok(not_found());
    };
    let meta = ctx.meta("public:unsubscribe".into(), &state);
    match usecases::unsubscribe::unsubscribe(&state.core, &link, &meta).await? {
        Unsubscribed::Done { .. } => {}
        Unsubscribed::NoRecipient => return Ok(not_found()),
    }
    let store = html_escape(&state.core.config.recovery.store_name);
    Ok(page(
        StatusCode::OK,
        "You are unsubscribed",
        &format!("<p>You will get no more cart reminders from {store}.</p>"),
    ))
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
