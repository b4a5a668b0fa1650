//! The sending-domain check (`POST /ocart/v1/recovery/dns-check`): SPF, DKIM and DMARC TXT
//! records, looked up through a DNS resolver (`[recovery] dns_resolver`, `ip:port`; default the
//! first `nameserver` of `/etc/resolv.conf`), each with a plain verdict.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::Resolver;
use ocart_processors::recovery::channels::DkimSettings;
use ocart_processors::recovery::dkim::{self, DkimAlgorithm, DkimKey};
use serde::Serialize;

/// One record's verdict.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Verdict {
    /// `pass`, `warn` or `fail`.
    pub status: &'static str,
    /// What was found and what to do, in a sentence.
    pub message: String,
    /// The name that was looked up.
    pub name: String,
    /// The record found, if any.
    pub record: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DnsReport {
    pub domain: String,
    pub spf: Verdict,
    pub dkim: Verdict,
    pub dmarc: Verdict,
}

/// The resolver to ask: the configured `ip:port`, else the system's first name server.
pub fn resolver_address(configured: Option<&str>) -> anyhow::Result<SocketAddr> {
    if let Some(raw) = configured {
        return raw
            .parse()
            .map_err(|_| anyhow::anyhow!("recovery.dns_resolver {raw:?} is not ip:port"));
    }
    let conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let ip = conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .find_map(|rest| rest.trim().parse::<std::net::IpAddr>().ok())
        .unwrap_or(std::net::IpAddr::from([1, 1, 1, 1]));
    Ok(SocketAddr::new(ip, 53))
}

/// A domain name as a store owner types it, checked.
pub fn valid_domain(raw: &str) -> Option<String> {
    let domain = raw.trim().trim_end_matches('.').to_ascii_lowercase();
    let ok = !domain.is_empty()
        && domain.len() <= 253
        && domain.contains('.')
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    ok.then_some(domain)
}

struct Lookup {
    resolver: Resolver<TokioRuntimeProvider>,
}

impl Lookup {
    fn new(server: SocketAddr) -> anyhow::Result<Self> {
        let mut name_server = NameServerConfig::udp_and_tcp(server.ip());
        for connection in &mut name_server.connections {
            connection.port = server.port();
        }
        let mut options = ResolverOpts::default();
        options.timeout = Duration::from_secs(3);
        options.attempts = 1;
        options.cache_size = 0;
        let mut builder = Resolver::builder_with_config(
            ResolverConfig::from_name_servers(vec![name_server]),
            TokioRuntimeProvider::default(),
        );
        *builder.options_mut() = options;
        Ok(Self {
            resolver: builder.build()?,
        })
    }

    /// The TXT strings at `name` (each record's strings joined); none when there are none.
    async fn txt(&self, name: &str) -> Result<Vec<String>, String> {
        match self.resolver.txt_lookup(format!("{name}.")).await {
            Ok(lookup) => Ok(lookup
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    RData::TXT(txt) => Some(
                        txt.txt_data
                            .iter()
                            .map(|part| String::from_utf8_lossy(part).into_owned())
                            .collect::<String>(),
                    ),
                    _ => None,
                })
                .collect()),
            Err(e) if e.is_no_records_found() => Ok(Vec::new()),
            Err(e) => Err(format!("the DNS lookup failed: {e}")),
        }
    }
}

fn verdict(status: &'static str, name: &str, record: Option<&String>, message: String) -> Verdict {
    Verdict {
        status,
        message,
        name: name.to_owned(),
        record: record.cloned(),
    }
}

fn spf(name: &str, records: Result<Vec<String>, String>) -> Verdict {
    let records = match records {
        Ok(r) => r,
        Err(e) => return verdict("fail", name, None, e),
    };
    let spf: Vec<&String> = records
        .iter()
        .filter(|r| r.to_ascii_lowercase().starts_with("v=spf1"))
        .collect();
    match spf.as_slice() {
        [] => verdict("fail", name, None, "No SPF record: add a TXT record \"v=spf1 include:<your mail provider> ~all\" so receivers know who may send for this domain.".into()),
        [one] => {
            let lower = one.to_ascii_lowercase();
            if lower.ends_with("+all") || lower.ends_with(" all") {
                verdict("warn", name, Some(one), "The SPF record ends in +all: anyone may send as this domain. End it with ~all or -all.".into())
            } else {
                verdict("pass", name, Some(one), "One SPF record is published.".into())
            }
        }
        [first, ..] => verdict("fail", name, Some(first), format!("{} SPF records are published; receivers treat more than one as an error (RFC 7208). Merge them into one.", spf.len())),
    }
}

/// What the DKIM record at the checked selector should hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DkimExpectation {
    /// The exact TXT value for the configured key (the checked domain and selector are the
    /// configured ones), as `ocart email dkim-record` prints it.
    Record(String),
    /// Only the algorithm is known (another selector, or no key configured: RSA).
    Algorithm(DkimAlgorithm),
}

impl DkimExpectation {
    /// From `[email.dkim]`: the configured key's record when `domain` and `selector` are its
    /// own, else its algorithm (RSA with no DKIM configured).
    pub fn from_config(settings: Option<&DkimSettings>, domain: &str, selector: &str) -> Self {
        let Some(settings) = settings else {
            return Self::Algorithm(DkimAlgorithm::Rsa);
        };
        let own = settings
            .domain
            .trim_end_matches('.')
            .eq_ignore_ascii_case(domain)
            && settings.selector == selector;
        if own {
            if let Ok(record) = DkimKey::load(settings).and_then(|key| key.record(selector, domain))
            {
                return Self::Record(record.value);
            }
        }
        Self::Algorithm(settings.algorithm)
    }

    /// The TXT value to publish, written out as far as it is known.
    fn hint(&self) -> String {
        match self {
            Self::Record(value) => value.clone(),
            Self::Algorithm(algorithm) => dkim::record_value(*algorithm, "…"),
        }
    }
}

/// A tag's value in a `tag=value; …` record.
fn tag<'a>(record: &'a str, name: &str) -> Option<&'a str> {
    record
        .split(';')
        .filter_map(|tag| tag.trim().split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

fn dkim(name: &str, records: Result<Vec<String>, String>, expected: &DkimExpectation) -> Verdict {
    let records = match records {
        Ok(r) => r,
        Err(e) => return verdict("fail", name, None, e),
    };
    let publish = format!(
        "TXT \"{}\" (`ocart email dkim-record` prints it)",
        expected.hint()
    );
    let Some(record) = records
        .iter()
        .find(|r| r.contains("p=") || r.to_ascii_lowercase().contains("v=dkim1"))
    else {
        return verdict("fail", name, None, format!("No DKIM key at this selector: publish the public key of the key OCart signs with, {publish}."));
    };
    let key: String = tag(record, "p")
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    if key.is_empty() {
        return verdict(
            "fail",
            name,
            Some(record),
            "The DKIM key at this selector is revoked (empty p=).".into(),
        );
    }
    if let DkimExpectation::Record(value) = expected {
        let same_key = tag(value, "p") == Some(key.as_str());
        let same_kind = tag(record, "k")
            .unwrap_or("rsa")
            .eq_ignore_ascii_case(tag(value, "k").unwrap_or("rsa"));
        if !(same_key && same_kind) {
            return verdict("fail", name, Some(record), format!("The key published at this selector is not the key OCart signs with, so receivers will fail its signatures: publish {publish}."));
        }
        return verdict(
            "pass",
            name,
            Some(record),
            "The public key of the key OCart signs with is published at this selector.".into(),
        );
    }
    verdict(
        "pass",
        name,
        Some(record),
        "A DKIM public key is published at this selector.".into(),
    )
}

fn dmarc(name: &str, records: Result<Vec<String>, String>) -> Verdict {
    let records = match records {
        Ok(r) => r,
        Err(e) => return verdict("fail", name, None, e),
    };
    let Some(record) = records
        .iter()
        .find(|r| r.to_ascii_lowercase().starts_with("v=dmarc1"))
    else {
        return verdict("fail", name, None, "No DMARC policy: add a TXT record at _dmarc (\"v=DMARC1; p=none; rua=mailto:…\" to start monitoring).".into());
    };
    let policy = record
        .split(';')
        .filter_map(|tag| tag.trim().split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("p"))
        .map(|(_, v)| v.trim().to_ascii_lowercase());
    match policy.as_deref() {
        Some("quarantine") | Some("reject") => verdict("pass", name, Some(record), format!("DMARC policy p={} is published.", policy.unwrap_or_default())),
        Some("none") => verdict("warn", name, Some(record), "DMARC is monitoring only (p=none): receivers take no action on failing mail. Move to quarantine once reports are clean.".into()),
        _ => verdict("fail", name, Some(record), "The DMARC record has no valid p= policy.".into()),
    }
}

/// Looks up and judges the domain's SPF, DKIM (at `selector`) and DMARC records.
pub async fn check(
    server: SocketAddr,
    domain: &str,
    selector: &str,
    expected: &DkimExpectation,
) -> anyhow::Result<DnsReport> {
    let lookup = Lookup::new(server)?;
    let dkim_name = dkim::record_name(selector, domain);
    let dmarc_name = format!("_dmarc.{domain}");
    let (spf_records, dkim_records, dmarc_records) = tokio::join!(
        lookup.txt(domain),
        lookup.txt(&dkim_name),
        lookup.txt(&dmarc_name)
    );
    Ok(DnsReport {
        domain: domain.to_owned(),
        spf: spf(domain, spf_records),
        dkim: dkim(&dkim_name, dkim_records, expected),
        dmarc: dmarc(&dmarc_name, dmarc_records),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(records: &[&str]) -> Result<Vec<String>, String> {
        Ok(records.iter().map(|r| r.to_string()).collect())
    }

    #[test]
    fn verdicts_are_plain() {
        assert_eq!(spf("d", ok(&["v=spf1 include:x ~all"])).status, "pass");
        assert_eq!(spf("d", ok(&["v=spf1 +all"])).status, "warn");
        assert_eq!(
            spf("d", ok(&["v=spf1 a ~all", "v=spf1 mx ~all"])).status,
            "fail"
        );
        assert_eq!(spf("d", ok(&["google-site-verification=x"])).status, "fail");
        let rsa = DkimExpectation::Algorithm(DkimAlgorithm::Rsa);
        assert_eq!(
            dkim("d", ok(&["v=DKIM1; k=rsa; p=MIIB"]), &rsa).status,
            "pass"
        );
        assert_eq!(dkim("d", ok(&["v=DKIM1; p="]), &rsa).status, "fail");
        assert_eq!(dmarc("d", ok(&["v=DMARC1; p=reject"])).status, "pass");
        assert_eq!(dmarc("d", ok(&["v=DMARC1; p=none"])).status, "warn");
        assert_eq!(dmarc("d", ok(&[])).status, "fail");
        assert_eq!(dmarc("d", Err("timeout".into())).status, "fail");
    }

    #[test]
    fn domains_are_checked() {
        assert_eq!(
            valid_domain("Shop.Example.com.").as_deref(),
            Some("shop.example.com")
        );
        assert!(valid_domain("localhost").is_none());
        assert!(valid_domain("bad domain.com").is_none());
        assert!(valid_domain("-x.com").is_none());
    }
}
