//! Rendering one recovery message, apart from sending it: the step a claim names, the links
//! of the message (restore, unsubscribe, the open pixel), the merge-tag context (the cart's
//! lines priced with `ocart_domain::line_total`, the coupon on coupon steps), and the message
//! itself (subject, HTML and text bodies for an email, the text of an SMS).
//!
//! Nothing here does IO: the dispatcher gathers the run, the cart's read row, the template and
//! the coupon, and hands over a [`Message`] to its channel. Every refusal is a
//! [`RenderError`], never a panic: a claim naming a step the sequence does not have, a cart row
//! whose items do not read, a line whose total only wrapping could write, a template that does
//! not render.

use ocart_domain::recovery::{Channel, IssuedCoupon, LinkHashes, Step};
use ocart_projections::queries::recovery::CartForSend;
use ocart_projections::Vault;
use sha2::{Digest, Sha256};

use super::channels::{OutgoingEmail, OutgoingSms};
use super::coupons::expiry_label;
use super::templates::{format_money, MergeContext, MergeItem, TemplateError, TemplateParts};

/// Why a message cannot be rendered. None of these goes away by trying again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RenderError {
    /// The claim names a step (1-based) outside the run's sequence.
    #[error("claimed step {step} of a {steps}-step sequence")]
    NoSuchStep { step: u32, steps: usize },
    /// The cart's read row holds items that are not cart items (the message names the cart).
    #[error("{0}")]
    Items(String),
    /// A line whose unit price × quantity is negative or past the largest amount.
    #[error("line {line} of cart {cart_id} ({quantity} × {unit_price}) has no total: it is past the largest amount")]
    LineTotal {
        cart_id: String,
        /// 1-based.
        line: usize,
        unit_price: i64,
        quantity: u32,
    },
    /// The step's template does not render.
    #[error("template {name}: {error}")]
    Template { name: String, error: TemplateError },
}

/// Step `step` (1-based, as claims count) of a run's sequence.
pub(crate) fn claimed_step(steps: &[Step], step: u32) -> Result<&Step, RenderError> {
    usize::try_from(step)
        .ok()
        .and_then(|n| steps.get(n.checked_sub(1)?))
        .ok_or(RenderError::NoSuchStep {
            step,
            steps: steps.len(),
        })
}

/// The link tokens of one message: unguessable without the server secret, and the same when
/// the message is built again after a crash (`Vault::link_token` of the message key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LinkTokens {
    pub restore: String,
    pub unsubscribe: String,
    /// The open pixel's, for an email.
    pub open: Option<String>,
}

impl LinkTokens {
    /// The tokens of the message `message_key` on `channel`.
    pub(crate) fn of_message(vault: &Vault, message_key: &str, channel: Channel) -> Self {
        Self {
            restore: vault.link_token("restore", message_key),
            unsubscribe: vault.link_token("unsubscribe", message_key),
            open: (channel == Channel::Email).then(|| vault.link_token("open", message_key)),
        }
    }

    /// What the run records of them: their sha256, never the tokens.
    pub(crate) fn hashes(&self) -> LinkHashes {
        let hash = |token: &str| Some(hex::encode(Sha256::digest(token.as_bytes())));
        LinkHashes {
            restore: hash(&self.restore),
            unsubscribe: hash(&self.unsubscribe),
            open: self.open.as_deref().and_then(hash),
        }
    }

    /// The links under OCart's public base URL.
    pub(crate) fn links(&self, public_url: &str) -> Links {
        let base = public_url.trim_end_matches('/');
        Links {
            restore_url: format!("{base}/r/{}", self.restore),
            unsubscribe_url: format!("{base}/u/{}", self.unsubscribe),
            pixel_url: self.open.as_ref().map(|t| format!("{base}/o/{t}")),
        }
    }
}

/// Where a message's links point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Links {
    pub restore_url: String,
    pub unsubscribe_url: String,
    /// The open-tracking pixel (emails only).
    pub pixel_url: Option<String>,
}

/// A message ready for its channel.
#[derive(Debug, Clone)]
pub(crate) enum Message {
    Email(OutgoingEmail),
    Sms(OutgoingSms),
}

/// One message before its template is rendered: the merge-tag context built from the cart and
/// the links, so a cart that cannot be shown is refused before a coupon is issued for it.
#[derive(Debug, Clone)]
pub(crate) struct Draft<'a> {
    message_key: &'a str,
    step: &'a Step,
    cart: &'a CartForSend,
    pixel_url: Option<&'a str>,
    context: MergeContext,
}

impl<'a> Draft<'a> {
    /// The draft of message `message_key` (step `step`) to `cart`, from `store_name`.
    pub(crate) fn new(
        message_key: &'a str,
        step: &'a Step,
        cart: &'a CartForSend,
        store_name: &str,
        links: &'a Links,
    ) -> Result<Self, RenderError> {
        Ok(Self {
            message_key,
            step,
            cart,
            pixel_url: links.pixel_url.as_deref(),
            context: merge_context(cart, store_name, links)?,
        })
    }

    /// The step the message is for.
    pub(crate) fn step(&self) -> &Step {
        self.step
    }

    /// Offers `coupon` in the message (`coupon_code`, `coupon_expiry`).
    pub(crate) fn offer(&mut self, coupon: &IssuedCoupon) {
        self.context.coupon_code = Some(coupon.code.clone());
        self.context.coupon_expiry = Some(expiry_label(coupon.expires_at));
    }

    /// Renders the step's template (`template`: the saved one or the built-in one) for the
    /// step's channel. HTML is auto-escaped (`templates`); the open pixel goes last in the
    /// body; an SMS ends with the opt-out instruction.
    pub(crate) fn render(&self, template: &TemplateParts) -> Result<Message, RenderError> {
        let rendered = template
            .render(&self.context)
            .map_err(|error| RenderError::Template {
                name: self.step.template.clone(),
                error,
            })?;
        let key = self.message_key.to_owned();
        Ok(match self.step.channel {
            Channel::Email => {
                let mut html = rendered.html;
                if let Some(pixel) = self.pixel_url {
                    // The open pixel goes last in the body (where a layout has one).
                    let img = format!(
                        "<img src=\"{pixel}\" width=\"1\" height=\"1\" alt=\"\" style=\"display:block\">"
                    );
                    match html.rfind("</body>") {
                        Some(at) => html.insert_str(at, &img),
                        None => html.push_str(&img),
                    }
                }
                Message::Email(OutgoingEmail {
                    key,
                    to: self.cart.email.clone().unwrap_or_default(),
                    subject: rendered.subject,
                    html,
                    text: rendered.text,
                    unsubscribe_url: self.context.unsubscribe_url.clone(),
                })
            }
            Channel::Sms => Message::Sms(OutgoingSms {
                key,
                to: self.cart.phone.clone().unwrap_or_default(),
                body: format!(
                    "{} Reply STOP to opt out: {}",
                    rendered.sms, self.context.unsubscribe_url
                ),
            }),
        })
    }
}

/// The merge tags of a message to `cart` (without a coupon).
fn merge_context(
    cart: &CartForSend,
    store_name: &str,
    links: &Links,
) -> Result<MergeContext, RenderError> {
    let items = cart.cart_items().map_err(RenderError::Items)?;
    let cart_items = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            // Captured lines are bounded (the capture refuses the others); a row holding one
            // anyway is refused here rather than shown with a made-up price.
            let minor =
                ocart_domain::line_total(item.unit_price, item.quantity).ok_or_else(|| {
                    RenderError::LineTotal {
                        cart_id: cart.cart_id.clone(),
                        line: i + 1,
                        unit_price: item.unit_price,
                        quantity: item.quantity,
                    }
                })?;
            Ok(MergeItem {
                name: item.name.clone(),
                quantity: i64::from(item.quantity),
                price: format_money(minor, &cart.currency),
                image: item.image_url.clone(),
            })
        })
        .collect::<Result<Vec<_>, RenderError>>()?;
    Ok(MergeContext {
        store_name: store_name.to_owned(),
        customer_first_name: cart
            .name
            .as_deref()
            .and_then(|n| n.split_whitespace().next())
            .unwrap_or_default()
            .to_owned(),
        customer_email: cart.email.clone().unwrap_or_default(),
        cart_items,
        cart_total: format_money(cart.total_minor, &cart.currency),
        restore_url: links.restore_url.clone(),
        unsubscribe_url: links.unsubscribe_url.clone(),
        coupon_code: None,
        coupon_expiry: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use ocart_domain::recovery::CouponKind;
    use serde_json::json;

    fn step(channel: Channel, template: &str) -> Step {
        serde_json::from_value(json!({
            "channel": channel,
            "delay_min": 60,
            "template": template,
        }))
        .unwrap()
    }

    fn cart(items: serde_json::Value) -> CartForSend {
        CartForSend {
            cart_id: "cart-1".into(),
            status: "abandoned".into(),
            erased: false,
            email: Some("ann@example.com".into()),
            email_hash: Some("eh".into()),
            phone: Some("+15550100".into()),
            phone_hash: Some("ph".into()),
            name: Some("Ann <b>Lee</b>".into()),
            currency: "EUR".into(),
            items: sqlx::types::Json(items),
            total_minor: 5000,
            abandoned_at: None,
            order_id: None,
        }
    }

    fn line(name: &str, unit_price: i64, quantity: u32) -> serde_json::Value {
        json!({"product_id": 7, "name": name, "quantity": quantity, "unit_price": unit_price})
    }

    fn tokens(channel: Channel) -> LinkTokens {
        LinkTokens {
            restore: "rtok".into(),
            unsubscribe: "utok".into(),
            open: (channel == Channel::Email).then(|| "otok".into()),
        }
    }

    fn email(message: Message) -> OutgoingEmail {
        match message {
            Message::Email(email) => email,
            Message::Sms(sms) => panic!("an email step rendered an SMS: {sms:?}"),
        }
    }

    #[test]
    fn a_claimed_step_outside_the_sequence_is_an_error() {
        let steps = vec![step(Channel::Email, "a"), step(Channel::Sms, "b")];
        assert_eq!(claimed_step(&steps, 1).unwrap().template, "a");
        assert_eq!(claimed_step(&steps, 2).unwrap().template, "b");
        for outside in [0, 3, u32::MAX] {
            assert_eq!(
                claimed_step(&steps, outside).unwrap_err(),
                RenderError::NoSuchStep {
                    step: outside,
                    steps: 2
                },
                "step {outside}"
            );
        }
        assert_eq!(
            claimed_step(&[], 1).unwrap_err().to_string(),
            "claimed step 1 of a 0-step sequence"
        );
    }

    #[test]
    fn a_line_whose_total_would_overflow_is_an_error_not_a_panic() {
        let links = tokens(Channel::Email).links("https://ocart.example.com");
        let step = step(Channel::Email, "recovery_email_1");
        for (unit_price, quantity) in [(i64::MAX, 2), (i64::MAX / 2 + 1, 2), (100_000_000_001, 1)] {
            let cart = cart(json!([
                line("Mug", 100, 1),
                line("Big", unit_price, quantity)
            ]));
            let err = Draft::new("run.s1.a1", &step, &cart, "Shop", &links).unwrap_err();
            assert_eq!(
                err,
                RenderError::LineTotal {
                    cart_id: "cart-1".into(),
                    line: 2,
                    unit_price,
                    quantity
                }
            );
        }
    }

    #[test]
    fn a_cart_row_whose_items_do_not_read_is_an_error_naming_the_cart() {
        let links = tokens(Channel::Email).links("https://ocart.example.com");
        let step = step(Channel::Email, "recovery_email_1");
        let cart = cart(json!([{"name": "no price"}]));
        match Draft::new("k", &step, &cart, "Shop", &links).unwrap_err() {
            RenderError::Items(message) => assert!(message.contains("cart-1"), "{message}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn merge_tag_content_is_escaped_in_html_and_kept_in_text() {
        let links = tokens(Channel::Email).links("https://ocart.example.com/");
        let step = step(Channel::Email, "custom");
        let cart = cart(json!([line("<script>x</script>", 1250, 2)]));
        let template = TemplateParts {
            subject: "{{ customer_first_name }}, your cart".into(),
            preheader: String::new(),
            html: "<html><body><p>Hi {{ customer_first_name }}</p>{% for i in cart_items %}<p>{{ i.name }} {{ i.price }}</p>{% endfor %}<a href=\"{{ restore_url }}\">back</a></body></html>".into(),
            text: "{% for i in cart_items %}{{ i.name }} × {{ i.quantity }}: {{ i.price }}{% endfor %}".into(),
            sms: String::new(),
        };
        let draft = Draft::new("run.s1.a1", &step, &cart, "Shop", &links).unwrap();
        let email = email(draft.render(&template).unwrap());
        assert!(
            email
                .html
                .contains("&lt;script&gt;x&lt;&#x2f;script&gt; €25.00"),
            "{}",
            email.html
        );
        assert!(!email.html.contains("<script>"), "{}", email.html);
        assert!(email.html.contains("Hi Ann</p>"), "{}", email.html);
        // (minijinja escapes `/` in HTML too; mail clients read the entity.)
        assert!(
            email
                .html
                .contains("href=\"https:&#x2f;&#x2f;ocart.example.com&#x2f;r&#x2f;rtok\""),
            "{}",
            email.html
        );
        assert_eq!(email.text, "<script>x</script> × 2: €25.00");
        assert_eq!(email.subject, "Ann, your cart");
        assert_eq!(email.key, "run.s1.a1");
        assert_eq!(email.to, "ann@example.com");
        assert_eq!(email.unsubscribe_url, "https://ocart.example.com/u/utok");
        // The open pixel, last in the body.
        assert!(
            email.html.ends_with(
                "<img src=\"https://ocart.example.com/o/otok\" width=\"1\" height=\"1\" alt=\"\" style=\"display:block\"></body></html>"
            ),
            "{}",
            email.html
        );
    }

    #[test]
    fn a_coupon_step_shows_its_coupon_and_an_sms_ends_with_the_opt_out() {
        let links = tokens(Channel::Sms).links("https://ocart.example.com");
        assert_eq!(links.pixel_url, None);
        let step = step(Channel::Sms, "recovery_sms");
        let cart = cart(json!([line("Mug", 1250, 2)]));
        let mut draft = Draft::new("run.s2.a1", &step, &cart, "Shop", &links).unwrap();
        draft.offer(&IssuedCoupon {
            code: "OCART-ABC".into(),
            kind: CouponKind::Percent,
            amount: 10,
            currency: "EUR".into(),
            expires_at: chrono::Utc.with_ymd_and_hms(2026, 5, 1, 0, 0, 0).unwrap(),
            store_id: None,
        });
        let Message::Sms(sms) = draft
            .render(&super::super::templates::builtin("recovery_sms"))
            .unwrap()
        else {
            panic!("an SMS step rendered an email");
        };
        assert_eq!(sms.to, "+15550100");
        assert_eq!(
            sms.body,
            "Shop: your cart is saved. Finish your order: https://ocart.example.com/r/rtok Code OCART-ABC. Reply STOP to opt out: https://ocart.example.com/u/utok"
        );
    }

    #[test]
    fn a_template_that_does_not_render_is_an_error_naming_it() {
        let links = tokens(Channel::Email).links("https://ocart.example.com");
        let step = step(Channel::Email, "broken");
        let cart = cart(json!([line("Mug", 1250, 2)]));
        let mut template = super::super::templates::builtin("recovery_email_1");
        template.subject = "{% if %}".into();
        let draft = Draft::new("k", &step, &cart, "Shop", &links).unwrap();
        match draft.render(&template).unwrap_err() {
            RenderError::Template { name, error } => {
                assert_eq!(name, "broken");
                assert_eq!(error.part, "subject");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn link_hashes_are_the_sha256_of_the_tokens() {
        let hashes = tokens(Channel::Email).hashes();
        assert_eq!(
            hashes.restore.as_deref(),
            Some(hex::encode(Sha256::digest(b"rtok")).as_str())
        );
        assert_eq!(
            hashes.open.as_deref(),
            Some(hex::encode(Sha256::digest(b"otok")).as_str())
        );
        assert_eq!(tokens(Channel::Sms).hashes().open, None);
    }
}
