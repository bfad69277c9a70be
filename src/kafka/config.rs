//! Making a client: its settings, and the errors an operator reads when it
//! cannot be made, or the cluster does not answer or refuses it.

use std::time::Duration;

use rdkafka::config::{ClientConfig, FromClientConfigAndContext};
use rdkafka::error::KafkaError;
use rdkafka::ClientContext;

/// Why a client could not be made or could not reach the cluster, in the
/// words the operator reads (the command line and the tests match them).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A librdkafka property it does not know, or a value it refuses.
    #[error("invalid Kafka setting {key}={value}: {reason}")]
    Setting {
        key: String,
        value: String,
        reason: String,
    },
    /// librdkafka could not make the client (or a handle of it); `client`
    /// says which ("producer", "consumer").
    #[error("cannot create the Kafka {client}: {reason}")]
    Create {
        client: &'static str,
        reason: String,
    },
    /// No answer from the cluster in time; the reason is librdkafka's last
    /// error (a refused connection, a name that does not resolve), not a
    /// bare timeout.
    #[error("cannot reach Kafka at {bootstrap} within {seconds} s: {reason}")]
    Unreachable {
        bootstrap: String,
        seconds: f64,
        reason: String,
    },
    /// A connection failed in a way trying again cannot mend (a
    /// certificate, a password: see [`Refusal`](super::Refusal)), said at
    /// the first failure; the reason is in the operator's words.
    #[error("cannot connect to Kafka at {bootstrap}: {reason}")]
    Refused { bootstrap: String, reason: String },
}

impl ClientError {
    /// librdkafka's refusal to make a `client`: the setting it refused, on
    /// one line, or why else it failed.
    pub fn creating(client: &'static str, error: KafkaError) -> ClientError {
        match error {
            KafkaError::ClientConfig(_, reason, key, value) => ClientError::Setting {
                key,
                value,
                // librdkafka ends some reasons with a line break: one line, please.
                reason: reason.trim_end().to_string(),
            },
            other => ClientError::Create {
                client,
                reason: other.to_string(),
            },
        }
    }

    /// The cluster at `bootstrap` did not answer a request within
    /// `timeout`: the reason is `last_error` (see
    /// [`LastError`](super::LastError)) if librdkafka said anything, else
    /// the request's own error.
    pub fn unreachable(
        bootstrap: &str,
        timeout: Duration,
        last_error: Option<String>,
        error: &KafkaError,
    ) -> ClientError {
        ClientError::Unreachable {
            bootstrap: bootstrap.to_string(),
            seconds: timeout.as_secs_f64(),
            reason: last_error.unwrap_or_else(|| error.to_string()),
        }
    }
}

/// A client's librdkafka settings (global and topic-level properties mixed;
/// librdkafka sorts them): `defaults` where the operator set nothing, the
/// operator's `settings`, and `ours` over both, for what the client's
/// working depends on.
pub fn client_config(
    settings: &[(String, String)],
    ours: &[(&str, &str)],
    defaults: &[(&str, &str)],
) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (key, value) in defaults {
        config.set(*key, *value);
    }
    for (key, value) in settings {
        config.set(key, value);
    }
    for (key, value) in ours {
        config.set(*key, *value);
    }
    config
}

/// Makes a client of `config` with its `context`; `client` names it in
/// errors ("producer", "consumer").
pub fn create<C, T>(
    config: &ClientConfig,
    context: C,
    client: &'static str,
) -> Result<T, ClientError>
where
    C: ClientContext,
    T: FromClientConfigAndContext<C>,
{
    config
        .create_with_context(context)
        .map_err(|e| ClientError::creating(client, e))
}

/// Who the brokers take a client made of `config` for, as the operator
/// knows it: its SASL user, its certificate's, or nobody in particular
/// (what Kafka calls User:ANONYMOUS).
pub fn principal(config: &ClientConfig) -> String {
    let protocol = config
        .get("security.protocol")
        .unwrap_or("plaintext")
        .to_ascii_lowercase();
    if protocol.starts_with("sasl") {
        return match config.get("sasl.username") {
            Some(user) => format!("user {user}"),
            None => "this client's SASL principal".to_string(),
        };
    }
    if protocol == "ssl" && super::refusal::has_client_certificate(config) {
        return "the user of this client's certificate (ssl.certificate.location)".to_string();
    }
    "user ANONYMOUS (no SASL user, no client certificate)".to_string()
}

/// Where the client looks for the cluster, as the operator set it (for
/// [`ClientError::Unreachable`]).
pub fn bootstrap(config: &ClientConfig) -> String {
    config.get("bootstrap.servers").unwrap_or("").to_string()
}

#[cfg(test)]
mod tests {
    use rdkafka::consumer::{BaseConsumer, DefaultConsumerContext};
    use rdkafka::error::RDKafkaErrorCode;

    use super::*;

    fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn ours_override_the_operator_who_overrides_the_defaults() {
        let operator = owned(&[("fetch.wait.max.ms", "7"), ("enable.auto.commit", "true")]);
        let config = client_config(
            &operator,
            &[("enable.auto.commit", "false")],
            &[
                ("fetch.wait.max.ms", "100"),
                ("queued.min.messages", "5000"),
            ],
        );
        assert_eq!(config.get("fetch.wait.max.ms"), Some("7"));
        assert_eq!(config.get("enable.auto.commit"), Some("false"));
        assert_eq!(config.get("queued.min.messages"), Some("5000"));
        assert_eq!(bootstrap(&config), "");
        let config = client_config(&owned(&[("bootstrap.servers", "k:9092")]), &[], &[]);
        assert_eq!(bootstrap(&config), "k:9092");
    }

    #[test]
    fn the_principal_as_the_operator_knows_it() {
        let of = |pairs: &[(&str, &str)]| principal(&client_config(&owned(pairs), &[], &[]));
        let sasl = [
            ("security.protocol", "SASL_SSL"),
            ("sasl.username", "alice"),
        ];
        assert_eq!(of(&sasl), "user alice");
        assert_eq!(
            of(&[("security.protocol", "sasl_plaintext")]),
            "this client's SASL principal"
        );
        let certificate = [
            ("security.protocol", "SSL"),
            ("ssl.certificate.location", "/etc/fastcapa/client.pem"),
        ];
        assert!(of(&certificate).contains("this client's certificate"));
        assert!(of(&[]).starts_with("user ANONYMOUS"));
        assert!(of(&[("security.protocol", "SSL")]).starts_with("user ANONYMOUS"));
    }

    #[test]
    fn a_refused_setting_is_one_line_naming_it() {
        let config = client_config(&owned(&[("no.such.property", "1")]), &[], &[]);
        let error = create::<_, BaseConsumer>(&config, DefaultConsumerContext, "consumer")
            .err()
            .expect("librdkafka refuses an unknown property");
        let text = error.to_string();
        assert!(
            text.starts_with("invalid Kafka setting no.such.property=1: "),
            "{text}"
        );
        assert!(!text.contains('\n'), "{text:?}");
        assert!(matches!(error, ClientError::Setting { .. }));
    }

    #[test]
    fn the_words_the_operator_reads() {
        let create = ClientError::creating("producer", KafkaError::Canceled);
        assert_eq!(
            create.to_string(),
            format!("cannot create the Kafka producer: {}", KafkaError::Canceled)
        );
        let fetch = KafkaError::MetadataFetch(RDKafkaErrorCode::OperationTimedOut);
        let timeout = Duration::from_millis(1500);
        assert_eq!(
            ClientError::unreachable("k:9092", timeout, Some("refused".into()), &fetch).to_string(),
            "cannot reach Kafka at k:9092 within 1.5 s: refused"
        );
        assert_eq!(
            ClientError::unreachable("k:9092", timeout, None, &fetch).to_string(),
            format!("cannot reach Kafka at k:9092 within 1.5 s: {fetch}")
        );
    }
}
