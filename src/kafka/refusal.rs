//! Refusals: what librdkafka reports when a connection fails in a way that
//! trying again cannot mend, and the words the operator reads for each.
//!
//! librdkafka retries every failed connection, so a certificate that does
//! not verify or a password the broker refuses shows as a cluster that does
//! not answer until the connect timeout, in OpenSSL's words. The errors it
//! reports on the way tell the refusal apart from a broker that is merely
//! not up yet (a refused connection, a name that does not resolve): only
//! these count as refusals, and a client gives up at the first one.
//!
//! - the broker's certificate did not verify here: not signed by a CA of
//!   `ssl.ca.location`, or not naming the host it is reached at;
//! - the broker refused this client's certificate, or its lack of one (a
//!   TLS alert from the broker);
//! - the broker refused the SASL credentials, or does not offer the
//!   mechanism.
//!
//! The words name which side's certificate failed and the settings to look
//! at; librdkafka's own words are kept short, at the end, to search for.

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// A definitive failure to connect, as librdkafka reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// This client could not verify the broker's certificate.
    BrokerCertificate { broker: String },
    /// The broker refused this client's certificate, or the lack of one:
    /// `alert` is the TLS alert it sent ("bad certificate").
    ClientCertificate { broker: String, alert: String },
    /// The broker refused the SASL credentials; `said` is its reason.
    Credentials { broker: String, said: String },
    /// The broker does not offer the SASL mechanism; `said` is librdkafka's
    /// account of it (with the mechanisms the broker offers).
    Mechanism { broker: String, said: String },
}

/// TLS alerts a broker sends about the client's certificate (as OpenSSL
/// words them after "sslv3 alert", "tlsv1 alert" or "tlsv13 alert").
const CLIENT_CERTIFICATE_ALERTS: &[&str] = &[
    "bad certificate",
    "certificate required",
    "unknown ca",
    "certificate unknown",
    "certificate expired",
    "certificate revoked",
    "unsupported certificate",
];

impl Refusal {
    /// The refusal librdkafka's error `error`, in its words `reason`,
    /// reports; `None` for anything trying again may mend.
    pub fn of(error: &KafkaError, reason: &str) -> Option<Refusal> {
        let code = error.rdkafka_error_code()?;
        let broker = broker_of(reason).to_string();
        match code {
            // A handshake fails as an SSL error; an alert that arrives once
            // the client thinks it is done (TLS 1.3) as a failed receive.
            RDKafkaErrorCode::SSL | RDKafkaErrorCode::BrokerTransportFailure => {
                if reason.contains("certificate verify failed") {
                    return Some(Refusal::BrokerCertificate { broker });
                }
                let alert = CLIENT_CERTIFICATE_ALERTS
                    .iter()
                    .find(|alert| reason.contains(&format!(" alert {alert}")))?;
                Some(Refusal::ClientCertificate {
                    broker,
                    alert: alert.to_string(),
                })
            }
            RDKafkaErrorCode::Authentication => {
                if let Some(said) = after(reason, "SASL authentication error: ") {
                    Some(Refusal::Credentials {
                        broker,
                        said: said.to_string(),
                    })
                } else if reason.contains("mechanism handshake failed") {
                    let said = match reason.split_once("://") {
                        Some(_) => after(reason, ": ").unwrap_or(reason),
                        None => after(reason, "").unwrap_or(reason),
                    };
                    Some(Refusal::Mechanism {
                        broker,
                        said: said.to_string(),
                    })
                } else {
                    // Other authentication errors (a token that could not be
                    // fetched, a Kerberos ticket) may pass.
                    None
                }
            }
            _ => None,
        }
    }

    /// Whether it is the broker's certificate that did not verify here.
    pub fn is_broker_certificate(&self) -> bool {
        matches!(self, Refusal::BrokerCertificate { .. })
    }

    /// The broker that refused, as librdkafka names it ("host:port"), or
    /// "" when its words did not say.
    pub fn broker(&self) -> &str {
        match self {
            Refusal::BrokerCertificate { broker }
            | Refusal::ClientCertificate { broker, .. }
            | Refusal::Credentials { broker, .. }
            | Refusal::Mechanism { broker, .. } => broker,
        }
    }

    /// The operator's words for the refusal of a client made of `config`.
    /// For the broker's certificate, `name_wrong` says what a second look
    /// found: `Some(true)` the certificate does not name the host (it
    /// verifies with host names unchecked), `Some(false)` its CA is not
    /// trusted, `None` not known (both are said).
    pub fn explain(&self, config: &ClientConfig, name_wrong: Option<bool>) -> String {
        match self {
            Refusal::BrokerCertificate { broker } => {
                let host = host_of(broker);
                let ca = "the broker's certificate is not signed by a CA this client trusts \
                          (ssl.ca.location)";
                let name = format!(
                    "the broker's certificate does not name {host}, the host it is reached at \
                     (ssl.endpoint.identification.algorithm=https checks it)"
                );
                let words = match name_wrong {
                    _ if !checks_host_names(config) => ca.to_string(),
                    Some(false) => ca.to_string(),
                    Some(true) => name,
                    None => format!(
                        "the broker's certificate is not signed by a CA this client trusts \
                         (ssl.ca.location), or does not name {host}, the host it is reached \
                         at (ssl.endpoint.identification.algorithm=https checks it)"
                    ),
                };
                format!("{words} (TLS: certificate verify failed)")
            }
            Refusal::ClientCertificate { alert, .. } => {
                let words = if has_client_certificate(config) {
                    "the broker refused this client's certificate: it must be signed by a \
                     CA the broker trusts, and valid (ssl.certificate.location, \
                     ssl.key.location)"
                } else {
                    "the broker requires a client certificate and this client has none \
                     (ssl.certificate.location and ssl.key.location)"
                };
                format!("{words} (TLS alert from the broker: {alert})")
            }
            Refusal::Credentials { said, .. } => {
                let mechanism = config.get("sasl.mechanism").unwrap_or("GSSAPI");
                let user = super::config::principal(config);
                format!(
                    "the broker refused the SASL credentials of {user} (sasl.username, \
                     sasl.password; sasl.mechanism={mechanism}) (SASL: {said})"
                )
            }
            Refusal::Mechanism { said, .. } => {
                let mechanism = config.get("sasl.mechanism").unwrap_or("GSSAPI");
                format!(
                    "the broker does not offer the SASL mechanism {mechanism} \
                     (sasl.mechanism) (SASL: {said})"
                )
            }
        }
    }
}

/// Whether a client made of `config` checks that the broker's certificate
/// names the host it is reached at (librdkafka's default: it does).
pub fn checks_host_names(config: &ClientConfig) -> bool {
    !config
        .get("ssl.endpoint.identification.algorithm")
        .is_some_and(|v| v.eq_ignore_ascii_case("none"))
}

/// Whether a client made of `config` shows the broker a certificate.
pub(super) fn has_client_certificate(config: &ClientConfig) -> bool {
    [
        "ssl.certificate.location",
        "ssl.certificate.pem",
        "ssl.keystore.location",
    ]
    .iter()
    .any(|key| config.get(key).is_some_and(|v| !v.is_empty()))
}

/// The broker librdkafka's words start with: "ssl://127.0.0.1:9093/bootstrap:
/// ..." or "ssl://127.0.0.1:9093/1: ..." gives "127.0.0.1:9093".
fn broker_of(reason: &str) -> &str {
    let Some((_, rest)) = reason.split_once("://") else {
        return "";
    };
    let name = rest.split(['/', ' ']).next().unwrap_or("");
    name.trim_end_matches(':')
}

/// The host of "host:port" ("[::1]:9093" gives "::1"); "host:port" as it
/// is if it holds no port.
fn host_of(broker: &str) -> &str {
    let host = match broker.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => broker,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        "the broker's host"
    } else {
        host
    }
}

/// What follows `marker` in `reason`, up to librdkafka's "(after ... in
/// state ...)" note.
fn after<'r>(reason: &'r str, marker: &str) -> Option<&'r str> {
    let (_, rest) = reason.split_once(marker)?;
    let rest = rest.split(" (after ").next().unwrap_or(rest);
    Some(rest.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn global(code: RDKafkaErrorCode) -> KafkaError {
        KafkaError::Global(code)
    }

    // librdkafka's words, as the tests' brokers made it say them.
    const VERIFY: &str = "ssl://127.0.0.1:60113/bootstrap: SSL handshake failed: \
        error:0A000086:SSL routines::certificate verify failed: broker certificate could not \
        be verified, verify that ssl.ca.location is correctly configured or root CA \
        certificates are installed (install ca-certificates package) (after 14ms in state \
        SSL_HANDSHAKE)";
    const ALERT: &str = "ssl://127.0.0.1:55177/bootstrap: Receive failed: \
        error:0A000412:SSL routines::sslv3 alert bad certificate: SSL alert number 42 (after \
        0ms in state APIVERSION_QUERY, 1 identical error(s) suppressed)";
    const PASSWORD: &str = "sasl_plaintext://127.0.0.1:52303/bootstrap: SASL authentication \
        error: Authentication failed during authentication due to invalid credentials with \
        SASL mechanism SCRAM-SHA-256 (after 337ms in state AUTH_REQ, 1 identical error(s) \
        suppressed)";
    const MECHANISM: &str = "sasl_plaintext://127.0.0.1:52303/bootstrap: SASL SCRAM-SHA-1 \
        mechanism handshake failed: Broker: Unsupported SASL mechanism: broker's supported \
        mechanisms: PLAIN,SCRAM-SHA-256 (after 3ms in state AUTH_HANDSHAKE)";

    fn config(pairs: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        for (key, value) in pairs {
            config.set(*key, *value);
        }
        config
    }

    #[test]
    fn what_trying_again_cannot_mend_is_a_refusal() {
        let ssl = global(RDKafkaErrorCode::SSL);
        let transport = global(RDKafkaErrorCode::BrokerTransportFailure);
        let auth = global(RDKafkaErrorCode::Authentication);
        assert_eq!(
            Refusal::of(&ssl, VERIFY),
            Some(Refusal::BrokerCertificate {
                broker: "127.0.0.1:60113".into()
            })
        );
        assert_eq!(
            Refusal::of(&transport, ALERT),
            Some(Refusal::ClientCertificate {
                broker: "127.0.0.1:55177".into(),
                alert: "bad certificate".into()
            })
        );
        let tls13 = ALERT.replace(
            "sslv3 alert bad certificate",
            "tlsv13 alert certificate required",
        );
        assert!(matches!(
            Refusal::of(&ssl, &tls13),
            Some(Refusal::ClientCertificate { alert, .. }) if alert == "certificate required"
        ));
        assert_eq!(
            Refusal::of(&auth, PASSWORD),
            Some(Refusal::Credentials {
                broker: "127.0.0.1:52303".into(),
                said: "Authentication failed during authentication due to invalid credentials \
                       with SASL mechanism SCRAM-SHA-256"
                    .into()
            })
        );
        assert!(matches!(
            Refusal::of(&auth, MECHANISM),
            Some(Refusal::Mechanism { said, .. }) if said.starts_with("SASL SCRAM-SHA-1 mechanism")
        ));
    }

    #[test]
    fn a_broker_not_up_yet_is_no_refusal() {
        let transport = global(RDKafkaErrorCode::BrokerTransportFailure);
        for reason in [
            "127.0.0.1:9092/bootstrap: Connect to ipv4#127.0.0.1:9092 failed: Connection \
             refused (after 0ms in state CONNECT)",
            "ssl://127.0.0.1:9093/bootstrap: Disconnected: connection closed by peer",
            "ssl://127.0.0.1:9093/bootstrap: SSL handshake failed: Disconnected: connecting \
             to a PLAINTEXT broker listener? (after 2ms in state SSL_HANDSHAKE)",
            "1/1 brokers are down",
        ] {
            assert_eq!(Refusal::of(&transport, reason), None, "{reason}");
        }
        let resolve = global(RDKafkaErrorCode::Resolve);
        assert_eq!(
            Refusal::of(&resolve, "kafka1:9092/bootstrap: Failed to resolve"),
            None
        );
        let down = global(RDKafkaErrorCode::AllBrokersDown);
        assert_eq!(
            Refusal::of(&down, VERIFY),
            None,
            "only the error that says why"
        );
        // An OAUTHBEARER token that could not be had may be had later.
        let auth = global(RDKafkaErrorCode::Authentication);
        assert_eq!(
            Refusal::of(&auth, "Failed to acquire SASL OAUTHBEARER token: timed out"),
            None
        );
    }

    #[test]
    fn the_words_name_the_side_and_the_setting() {
        let ssl = global(RDKafkaErrorCode::SSL);
        let broker = Refusal::of(&ssl, VERIFY).unwrap();
        let checked = config(&[("security.protocol", "SSL")]);
        let unchecked = config(&[("ssl.endpoint.identification.algorithm", "none")]);
        let words = broker.explain(&checked, Some(false));
        assert!(words.contains("not signed by a CA") && words.contains("ssl.ca.location"));
        assert!(
            words.ends_with("(TLS: certificate verify failed)"),
            "{words}"
        );
        assert!(!words.contains("name"), "{words}");
        let words = broker.explain(&checked, Some(true));
        assert!(words.contains("does not name 127.0.0.1, the host it is reached at"));
        assert!(
            words.contains("ssl.endpoint.identification.algorithm"),
            "{words}"
        );
        assert!(!words.contains("ssl.ca.location"), "{words}");
        let words = broker.explain(&checked, None);
        assert!(words.contains("ssl.ca.location") && words.contains("does not name 127.0.0.1"));
        // With host names unchecked, only the CA can be wrong.
        let words = broker.explain(&unchecked, None);
        assert!(
            words.contains("ssl.ca.location") && !words.contains("name"),
            "{words}"
        );

        let transport = global(RDKafkaErrorCode::BrokerTransportFailure);
        let client = Refusal::of(&transport, ALERT).unwrap();
        let words = client.explain(&checked, None);
        assert!(words.contains("requires a client certificate and this client has none"));
        assert!(
            words.ends_with("(TLS alert from the broker: bad certificate)"),
            "{words}"
        );
        let with = config(&[("ssl.certificate.location", "/etc/fastcapa/client.pem")]);
        assert!(client
            .explain(&with, None)
            .contains("refused this client's certificate"));

        let auth = global(RDKafkaErrorCode::Authentication);
        let sasl = config(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-256"),
            ("sasl.username", "alice"),
        ]);
        let words = Refusal::of(&auth, PASSWORD).unwrap().explain(&sasl, None);
        assert!(words.starts_with("the broker refused the SASL credentials of user alice"));
        assert!(words.contains("sasl.mechanism=SCRAM-SHA-256"), "{words}");
        assert!(
            words.contains("(SASL: Authentication failed during"),
            "{words}"
        );
        let words = Refusal::of(&auth, MECHANISM).unwrap().explain(&sasl, None);
        assert!(
            words.contains("does not offer the SASL mechanism"),
            "{words}"
        );
        for refusal in [broker, client] {
            assert!(!refusal.explain(&checked, None).contains('\n'));
        }
    }

    #[test]
    fn brokers_and_hosts_from_librdkafkas_words() {
        assert_eq!(broker_of(VERIFY), "127.0.0.1:60113");
        assert_eq!(
            broker_of("ssl://[::1]:9093/1: SSL handshake failed"),
            "[::1]:9093"
        );
        assert_eq!(broker_of("1/1 brokers are down"), "");
        assert_eq!(host_of("127.0.0.1:60113"), "127.0.0.1");
        assert_eq!(host_of("[::1]:9093"), "::1");
        assert_eq!(host_of("kafka1"), "kafka1");
        assert_eq!(host_of(""), "the broker's host");
    }
}
