//! The hosted one-click offer page (issue 11), server-rendered HTML that works without
//! JavaScript: the offer with a form POST to accept and one to decline (the token in a hidden
//! field), and, once the step is decided, the decision's state — `processing` (refreshing
//! itself), the gateway's action (a redirect, or an in-page frame when
//! `upsells.sca_modal_enabled` and JavaScript runs), the outcome and the way on (the funnel's
//! next offer, or the token's return URL).
//!
//! With JavaScript, accepting is a `fetch` carrying an `Idempotency-Key` kept in
//! `sessionStorage` (a double click or a reload sends the same key), then a poll of the
//! acceptance's status. Everything is rendered by minijinja with HTML auto-escaping; values
//! reach the script only through escaped `data-` attributes. An offer's `page_template`
//! replaces the offer page (the same context); one that fails to render falls back to the
//! built-in page.

use minijinja::{context, AutoEscape, Environment, UndefinedBehavior, Value};
use ocart_domain::upsell::AcceptanceStatus;
use ocart_domain::Money;

use crate::usecases::upsells::{acceptance_of, Next, PageView};

/// The built-in offer page.
const OFFER_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<meta name="referrer" content="no-referrer"><title>{{ offer.headline or offer.name }}</title>
<style>body{font-family:sans-serif;max-width:34rem;margin:2rem auto;padding:0 1rem}
.price{font-size:1.6rem;font-weight:bold}.was{text-decoration:line-through;color:#777}
button{font-size:1.1rem;padding:.7rem 1.2rem;margin:.4rem 0;width:100%}
.decline{background:none;border:none;color:#555;text-decoration:underline}</style></head>
<body>
<h1>{{ offer.headline or offer.name }}</h1>
{% if offer.image_url %}<img src="{{ offer.image_url }}" alt="{{ offer.product_name }}" style="max-width:100%">{% endif %}
<p>{{ offer.copy }}</p>
<p><strong>{{ offer.product_name }}</strong>{% if offer.quantity > 1 %} × {{ offer.quantity }}{% endif %}</p>
<p class="price" data-testid="price">{{ price }} {{ currency }}</p>
{% if regular %}<p><span class="was">{{ regular }} {{ currency }}</span> — you save {{ saving }} {{ currency }}</p>{% endif %}
<p data-testid="time-left">This offer is reserved for you for {{ minutes_left }} more minute{% if minutes_left != 1 %}s{% endif %}.</p>
<form method="post" action="{{ accept_url }}" id="ocart-accept" data-status-base="{{ status_base }}" data-page-url="{{ self_url }}" data-jti="{{ jti }}">
<input type="hidden" name="token" value="{{ token }}">
<button type="submit">Yes, add it to my order — {{ price }} {{ currency }}</button>
</form>
<form method="post" action="{{ decline_url }}">
<input type="hidden" name="token" value="{{ token }}">
<button type="submit" class="decline">No thanks</button>
</form>
<p id="ocart-message" role="status"></p>
<script>
(function () {
  var form = document.getElementById('ocart-accept');
  if (!form || !window.fetch || !window.sessionStorage) return;
  form.addEventListener('submit', function (event) {
    event.preventDefault();
    var slot = 'ocart-idem-' + form.dataset.jti;
    var key = sessionStorage.getItem(slot);
    if (!key) {
      key = (window.crypto && crypto.randomUUID) ? crypto.randomUUID() : String(Date.now()) + Math.random();
      sessionStorage.setItem(slot, key);
    }
    var token = form.querySelector('input[name=token]').value;
    var message = document.getElementById('ocart-message');
    message.textContent = 'Processing…';
    form.querySelector('button').disabled = true;
    fetch(form.action, {method: 'POST', headers: {'Content-Type': 'application/json', 'Idempotency-Key': key},
      body: JSON.stringify({token: token})})
      .then(function (r) { return r.json().then(function (b) { return [r.status, b]; }); })
      .then(function (answer) {
        var status = answer[0], body = answer[1];
        var id = body.acceptance_id || (body.acceptance && body.acceptance.acceptance_id);
        if (!id) { message.textContent = body.detail || 'Something went wrong.'; form.querySelector('button').disabled = false; return; }
        // A long poll: the answer comes when the status moves on from the one last seen.
        var poll = function (last) {
          fetch(form.dataset.statusBase + encodeURIComponent(id) + '?token=' + encodeURIComponent(token)
                + '&status=' + encodeURIComponent(last) + '&wait=20')
            .then(function (r) { return r.json(); })
            .then(function (s) {
              if (s.shown_status === 'processing') { poll(s.status); } else { window.location = form.dataset.pageUrl; }
            }, function () { setTimeout(function () { poll(last); }, 3000); });
        };
        if (status === 202 || status === 409) poll('charging'); else { message.textContent = body.detail || 'Something went wrong.'; }
      }, function () { form.submit(); });
  });
})();
</script>
</body></html>"#;

/// The built-in state page of a decided step.
const STATUS_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<meta name="referrer" content="no-referrer">
{% if shown == "processing" %}<meta http-equiv="refresh" content="2">{% endif %}
{% if shown == "requires_action" and action_url %}<noscript><meta http-equiv="refresh" content="0;url={{ action_url }}"></noscript>{% endif %}
{% if redirect_url %}<meta http-equiv="refresh" content="3;url={{ redirect_url }}">{% endif %}
<title>{{ title }}</title>
<style>body{font-family:sans-serif;max-width:34rem;margin:2rem auto;padding:0 1rem}
#ocart-sca{position:fixed;inset:0;background:rgba(0,0,0,.5);display:none}
#ocart-sca iframe{width:min(30rem,95vw);height:min(36rem,90vh);margin:5vh auto;display:block;background:#fff;border:0}</style></head>
<body data-shown="{{ shown }}">
<h1>{{ title }}</h1>
<p data-testid="status">{{ message }}</p>
{% if shown == "requires_action" %}
  {% if action_url %}
    <p><a href="{{ action_url }}" id="ocart-action" data-modal="{{ modal }}">Continue to verification</a></p>
    <div id="ocart-sca"></div>
    <script>
    (function () {
      var link = document.getElementById('ocart-action');
      if (link.dataset.modal === 'true') {
        var box = document.getElementById('ocart-sca');
        var frame = document.createElement('iframe');
        frame.src = link.href; frame.title = 'Payment verification';
        box.appendChild(frame); box.style.display = 'block';
      } else { window.location = link.href; }
    })();
    </script>
  {% else %}
    <p>Your bank needs to confirm this payment. Please check your banking app, then reload this page.</p>
  {% endif %}
{% endif %}
{% if next_url %}<p><a href="{{ next_url }}" data-testid="next">{{ next_label }}</a></p>{% endif %}
</body></html>"#;

/// A plain page: `title` and a paragraph, escaped.
const MESSAGE_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{{ title }}</title></head>
<body style="font-family:sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem">
<h1 style="font-size:1.4rem">{{ title }}</h1><p>{{ message }}</p>
{% if link %}<p><a href="{{ link }}">{{ link_label }}</a></p>{% endif %}
</body></html>"#;

/// The HTML-escaping environment every page is rendered in.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env.set_auto_escape_callback(|_| AutoEscape::Html);
    env
}

fn render(source: &str, ctx: Value) -> Result<String, minijinja::Error> {
    let env = environment();
    env.render_str(source, ctx)
}

/// A plain page (errors, "all done").
pub fn message_page(title: &str, message: &str, link: Option<(&str, &str)>) -> String {
    let (link, link_label) = link.unzip();
    render(MESSAGE_PAGE, context! { title, message, link, link_label })
        .unwrap_or_else(|_| "<!doctype html><title>Error</title>".to_owned())
}

fn money(m: &Money) -> String {
    m.decimal()
}

/// The URL the shopper follows from a decided step, and its label.
fn next_link(next: Option<&Next>) -> (Option<String>, &'static str) {
    match next {
        Some(Next::Offer { page_url, .. }) => (Some(page_url.clone()), "See your next offer"),
        Some(Next::Done {
            return_url: Some(url),
        }) => (Some(url.clone()), "Back to the store"),
        _ => (None, ""),
    }
}

/// The page for `view`: the offer while undecided, else the decision's state.
/// `action_fallback` is the sandbox's 3DS page for a charge that names no action URL.
pub fn render_page(view: &PageView, action_fallback: Option<String>) -> String {
    if let Some(acceptance) = &view.acceptance {
        let status = acceptance.status().unwrap_or(AcceptanceStatus::Charging);
        let shown = status.shown();
        let (title, message) = match status {
            AcceptanceStatus::Charging | AcceptanceStatus::Unknown => (
                "Processing your order",
                "We are adding this to your order. This page refreshes by itself.",
            ),
            AcceptanceStatus::RequiresAction => (
                "One more step",
                "Your bank asks you to confirm this payment.",
            ),
            AcceptanceStatus::Succeeded | AcceptanceStatus::Accepted => (
                "Added to your order",
                "Thank you! It has been added to your order and charged to the same payment method.",
            ),
            AcceptanceStatus::Declined => (
                "The payment did not go through",
                "Your payment method was declined, so nothing was charged or added.",
            ),
            AcceptanceStatus::DeclinedByShopper => (
                "No problem",
                "Nothing was added to your order.",
            ),
        };
        let (next_url, next_label) = next_link(view.next.as_ref());
        let redirect_url = match view.next.as_ref() {
            Some(Next::Done { return_url }) => return_url.clone(),
            _ => None,
        };
        let action_url = acceptance
            .action_url()
            .map(str::to_owned)
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
            .or(action_fallback);
        return render(
            STATUS_PAGE,
            context! {
                title, message, shown,
                action_url,
                modal => view.sca_modal,
                next_url, next_label, redirect_url,
                acceptance_id => acceptance.id(),
            },
        )
        .unwrap_or_else(|_| message_page(title, message, None));
    }
    let Some((offer, quote)) = &view.offer else {
        let reason = view
            .ineligible
            .clone()
            .unwrap_or_else(|| "This offer is no longer available.".into());
        let back = view
            .claims
            .return_url
            .as_deref()
            .map(|u| (u, "Back to the store"));
        return message_page("This offer is no longer available", &reason, back);
    };
    let seconds_left = (view.claims.exp - view.now.timestamp()).max(0);
    let minutes_left = (seconds_left + 59) / 60;
    let offer_id = &view.claims.offer_id;
    let ctx = context! {
        offer => context! {
            id => offer_id,
            name => &offer.name,
            headline => &offer.display.headline,
            copy => &offer.display.copy,
            image_url => &offer.display.image_url,
            product_name => &offer.product.name,
            quantity => offer.product.quantity,
        },
        price => money(&quote.price),
        regular => quote.regular.as_ref().filter(|_| quote.saving.minor() > 0).map(money),
        saving => money(&quote.saving),
        currency => quote.price.currency().as_str(),
        minutes_left,
        token => &view.token,
        jti => &view.claims.jti,
        acceptance_id => acceptance_of(&view.claims),
        // Our own paths of percent-encoded parts: nothing in them to escape.
        accept_url => Value::from_safe_string(format!("/ocart/v1/upsells/{}/accept", urlencode(offer_id))),
        decline_url => Value::from_safe_string(format!("/ocart/v1/upsells/{}/decline", urlencode(offer_id))),
        status_base => Value::from_safe_string("/ocart/v1/upsells/acceptances/".into()),
        self_url => Value::from_safe_string(format!("/ocart/v1/upsells/page?token={}", urlencode(&view.token))),
        return_url => &view.claims.return_url,
    };
    if let Some(custom) = offer
        .page_template
        .as_deref()
        .filter(|t| !t.trim().is_empty())
    {
        match render(custom, ctx.clone()) {
            Ok(html) => return html,
            Err(err) => {
                tracing::warn!(offer = %offer_id, error = %err, "the offer's page template failed; the built-in page is shown")
            }
        }
    }
    render(OFFER_PAGE, ctx).unwrap_or_else(|_| {
        message_page(
            "This offer is not available",
            "The page could not be shown.",
            None,
        )
    })
}

/// Percent-encodes a path segment or query value (everything but unreserved characters).
pub fn urlencode(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_pages_escape_what_they_show() {
        let html = message_page("<b>x</b>", "a & \"b\"", Some(("javascript:\"x", "<go>")));
        assert!(html.contains("&lt;b&gt;x&lt;&#x2f;b&gt;"), "{html}");
        assert!(html.contains("a &amp; &quot;b&quot;"));
        assert!(!html.contains("<go>"));
    }

    #[test]
    fn urlencoding_keeps_only_unreserved_characters() {
        assert_eq!(urlencode("a b/é"), "a%20b%2F%C3%A9");
        assert_eq!(urlencode("ab.c-_~"), "ab.c-_~");
    }
}
