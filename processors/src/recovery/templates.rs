//! Recovery message templates: subject, preheader, HTML body, text body and SMS body, rendered
//! with minijinja. HTML bodies are auto-escaped (a product called `<script>` shows as text);
//! the other parts are plain text. A template may only use the merge tags in [`MERGE_TAGS`];
//! anything else is refused when the template is checked, not when a message is sent.

use std::collections::BTreeSet;

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::Serialize;

/// The merge tags a template may use.
pub const MERGE_TAGS: &[&str] = &[
    "store_name",
    "customer_first_name",
    "customer_email",
    "cart_items",
    "cart_total",
    "restore_url",
    "unsubscribe_url",
    "coupon_code",
    "coupon_expiry",
];

/// One item of `cart_items`.
#[derive(Debug, Clone, Serialize)]
pub struct MergeItem {
    pub name: String,
    pub quantity: i64,
    /// Formatted line price, such as `€25.00`.
    pub price: String,
    pub image: Option<String>,
}

/// What a message is rendered with.
#[derive(Debug, Clone, Serialize)]
pub struct MergeContext {
    pub store_name: String,
    pub customer_first_name: String,
    pub customer_email: String,
    pub cart_items: Vec<MergeItem>,
    pub cart_total: String,
    pub restore_url: String,
    pub unsubscribe_url: String,
    /// Only on coupon steps.
    pub coupon_code: Option<String>,
    pub coupon_expiry: Option<String>,
}

/// The parts of one template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct TemplateParts {
    pub subject: String,
    #[serde(default)]
    pub preheader: String,
    pub html: String,
    pub text: String,
    #[serde(default)]
    pub sms: String,
}

/// A rendered message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rendered {
    pub subject: String,
    pub preheader: String,
    pub html: String,
    pub text: String,
    pub sms: String,
}

/// A part that does not compile or uses an unknown tag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{part}: {message}")]
pub struct TemplateError {
    /// subject, preheader, html, text or sms
    pub part: &'static str,
    pub message: String,
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    env
}

impl TemplateParts {
    fn parts(&self) -> [(&'static str, &str); 5] {
        [
            ("subject", &self.subject),
            ("preheader", &self.preheader),
            ("html", &self.html),
            ("text", &self.text),
            ("sms", &self.sms),
        ]
    }

    /// Compiles every part and refuses unknown merge tags, naming the part and the tag.
    pub fn check(&self) -> Result<(), Vec<TemplateError>> {
        let env = environment();
        let allowed: BTreeSet<&str> = MERGE_TAGS.iter().copied().collect();
        let mut errors = Vec::new();
        for (part, source) in self.parts() {
            match env.template_from_str(source) {
                Ok(template) => {
                    let unknown: Vec<String> = template
                        .undeclared_variables(false)
                        .into_iter()
                        // The HTML body may also place the preheader (hidden preview text).
                        .filter(|v| {
                            !(allowed.contains(v.as_str()) || (part == "html" && v == "preheader"))
                        })
                        .collect();
                    if !unknown.is_empty() {
                        errors.push(TemplateError {
                            part,
                            message: format!(
                                "unknown merge tag{} {}; the tags are {}",
                                if unknown.len() == 1 { "" } else { "s" },
                                unknown.join(", "),
                                MERGE_TAGS.join(", ")
                            ),
                        });
                    }
                }
                Err(err) => errors.push(TemplateError {
                    part,
                    message: err.to_string(),
                }),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Renders every part with `context`.
    pub fn render(&self, context: &MergeContext) -> Result<Rendered, TemplateError> {
        let env = environment();
        let render = |part: &'static str, name: &str, source: &str| {
            env.render_named_str(name, source, context)
                .map(|s| s.trim().to_owned())
                .map_err(|e| TemplateError {
                    part,
                    message: e.to_string(),
                })
        };
        let preheader = render("preheader", "preheader.txt", &self.preheader)?;
        let html_context = minijinja::context! {
            preheader => preheader.clone(),
            ..minijinja::Value::from_serialize(context)
        };
        let html = env
            .render_named_str("body.html", &self.html, html_context)
            .map(|s| s.trim().to_owned())
            .map_err(|e| TemplateError {
                part: "html",
                message: e.to_string(),
            })?;
        Ok(Rendered {
            subject: render("subject", "subject.txt", &self.subject)?,
            preheader,
            html,
            text: render("text", "body.txt", &self.text)?,
            sms: render("sms", "sms.txt", &self.sms)?,
        })
    }
}

const HTML_LAYOUT_START: &str = r#"<!doctype html>
<html><body style="font-family:sans-serif;color:#222">
<span style="display:none">{{ preheader }}</span>"#;

const ITEMS_HTML: &str = r#"<table cellpadding="6">
{% for item in cart_items %}<tr>{% if item.image %}<td><img src="{{ item.image }}" width="64" alt=""></td>{% endif %}<td>{{ item.name }} × {{ item.quantity }}</td><td>{{ item.price }}</td></tr>
{% endfor %}<tr><td colspan="2"><strong>Total</strong></td><td><strong>{{ cart_total }}</strong></td></tr>
</table>"#;

const FOOTER_HTML: &str = r#"<p style="font-size:12px;color:#777">You are receiving this because you started a checkout at {{ store_name }}. <a href="{{ unsubscribe_url }}">Unsubscribe</a>.</p>
</body></html>"#;

const ITEMS_TEXT: &str = "{% for item in cart_items %}- {{ item.name }} × {{ item.quantity }}: {{ item.price }}\n{% endfor %}Total: {{ cart_total }}";

impl From<ocart_domain::recovery::TemplateContent> for TemplateParts {
    fn from(c: ocart_domain::recovery::TemplateContent) -> Self {
        Self {
            subject: c.subject,
            preheader: c.preheader,
            html: c.html,
            text: c.text,
            sms: c.sms,
        }
    }
}

impl From<TemplateParts> for ocart_domain::recovery::TemplateContent {
    fn from(p: TemplateParts) -> Self {
        Self {
            subject: p.subject,
            preheader: p.preheader,
            html: p.html,
            text: p.text,
            sms: p.sms,
        }
    }
}

/// The template saved under `name`, or else the built-in one.
pub async fn resolve(db: &ocart_projections::Db, name: &str) -> Result<TemplateParts, sqlx::Error> {
    Ok(
        match ocart_projections::queries::recovery::get_template(db, name).await? {
            Some(row) => TemplateParts {
                subject: row.subject,
                preheader: row.preheader,
                html: row.html,
                text: row.text,
                sms: row.sms,
            },
            None => builtin(name),
        },
    )
}

/// The names of the built-in templates.
pub const BUILTIN: &[&str] = &[
    "recovery_email_1",
    "recovery_email_2",
    "recovery_email_3",
    "recovery_sms",
];

/// The template a step names when nothing was saved under that name: the three emails of the
/// default sequence, and an SMS reminder for any other name.
pub fn builtin(name: &str) -> TemplateParts {
    let (subject, preheader, lead, coupon) = match name {
        "recovery_email_1" => (
            "{{ customer_first_name or 'Hi' }}, you left something in your cart",
            "Your cart at {{ store_name }} is saved",
            "You left these in your cart at {{ store_name }}. They are saved for you:",
            false,
        ),
        "recovery_email_2" => (
            "Still thinking it over?",
            "Your cart is waiting at {{ store_name }}",
            "Your cart is still waiting. Questions about shipping or returns? Just reply to this email.",
            false,
        ),
        _ => (
            "A little something to complete your order",
            "Your cart, and a discount, at {{ store_name }}",
            "This is our last reminder about your cart.",
            true,
        ),
    };
    let coupon_html = if coupon {
        "{% if coupon_code %}<p>Use code <strong>{{ coupon_code }}</strong> at checkout (valid until {{ coupon_expiry }}).</p>{% endif %}"
    } else {
        ""
    };
    let coupon_text = if coupon {
        "{% if coupon_code %}Use code {{ coupon_code }} at checkout (valid until {{ coupon_expiry }}).\n\n{% endif %}"
    } else {
        ""
    };
    TemplateParts {
        subject: subject.into(),
        preheader: preheader.into(),
        html: format!(
            "{HTML_LAYOUT_START}\n<p>Hi {{{{ customer_first_name or 'there' }}}},</p>\n<p>{lead}</p>\n{ITEMS_HTML}\n{coupon_html}\n<p><a href=\"{{{{ restore_url }}}}\" style=\"background:#222;color:#fff;padding:10px 16px;text-decoration:none\">Return to your cart</a></p>\n{FOOTER_HTML}"
        )
        .replace("{{ preheader }}", preheader),
        text: format!(
            "Hi {{{{ customer_first_name or 'there' }}}},\n\n{lead}\n\n{ITEMS_TEXT}\n\n{coupon_text}Return to your cart: {{{{ restore_url }}}}\n\nUnsubscribe: {{{{ unsubscribe_url }}}}"
        ),
        sms: "{{ store_name }}: your cart is saved. Finish your order: {{ restore_url }}{% if coupon_code %} Code {{ coupon_code }}.{% endif %}".into(),
    }
}

/// Formats minor units with the currency, for merge tags: `€12.50`, `US$3.00`, `¥500`.
pub fn format_money(minor: i64, currency: &str) -> String {
    let symbol = match currency {
        "EUR" => "€",
        "USD" => "$",
        "GBP" => "£",
        "JPY" => "¥",
        "KRW" => "₩",
        _ => "",
    };
    let amount = decimal_amount(minor, currency);
    if symbol.is_empty() {
        format!("{amount} {currency}")
    } else if let Some(positive) = amount.strip_prefix('-') {
        format!("-{symbol}{positive}")
    } else {
        format!("{symbol}{amount}")
    }
}

/// Minor units as a plain decimal in the currency's own digits (`1000` EUR → `10.00`,
/// `500` JPY → `500`); an unknown code counts two decimals.
pub fn decimal_amount(minor: i64, currency: &str) -> String {
    let exponent = ocart_domain::Currency::parse("currency", currency)
        .map(|c| c.exponent())
        .unwrap_or(2);
    ocart_domain::format_decimal(minor, exponent)
}

/// A cart to preview templates with.
pub fn sample_context() -> MergeContext {
    MergeContext {
        store_name: "Example Store".into(),
        customer_first_name: "Ann".into(),
        customer_email: "ann@example.com".into(),
        cart_items: vec![MergeItem {
            name: "Mug".into(),
            quantity: 2,
            price: format_money(2500, "EUR"),
            image: None,
        }],
        cart_total: format_money(2500, "EUR"),
        restore_url: "https://ocart.example.com/r/sample".into(),
        unsubscribe_url: "https://ocart.example.com/u/sample".into(),
        coupon_code: Some("OCART-SAMPLE1".into()),
        coupon_expiry: Some("2026-12-31".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_templates_use_only_known_tags_and_escape_html() {
        for name in ["recovery_email_1", "recovery_email_2", "recovery_email_3"] {
            builtin(name).check().unwrap();
        }
        let mut context = sample_context();
        context.cart_items[0].name = "<script>x</script>".into();
        let rendered = builtin("recovery_email_1").render(&context).unwrap();
        assert!(rendered
            .html
            .contains("&lt;script&gt;x&lt;&#x2f;script&gt;"));
        assert!(rendered.text.contains("<script>x</script> × 2"));
        assert!(!rendered.html.contains("OCART-SAMPLE1"));
        let third = builtin("recovery_email_3").render(&context).unwrap();
        assert!(third.html.contains("OCART-SAMPLE1"), "{}", third.html);
    }

    #[test]
    fn unknown_tags_and_bad_syntax_are_refused_by_part() {
        let mut parts = builtin("recovery_email_1");
        parts.subject = "Hi {{ first_name }}".into();
        parts.sms = "{% if %}".into();
        let errors = parts.check().unwrap_err();
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].part, "subject");
        assert!(errors[0].message.contains("first_name"));
        assert_eq!(errors[1].part, "sms");
    }

    #[test]
    fn money_is_formatted_from_minor_units() {
        assert_eq!(format_money(1250, "EUR"), "€12.50");
        assert_eq!(format_money(500, "JPY"), "¥500");
        assert_eq!(format_money(7, "CHF"), "0.07 CHF");
    }
}
