//! The HTTP call both LLM clients make (the runtime's provider and the
//! dream's LLM pass): one JSON POST to an Anthropic- or OpenAI-style
//! endpoint, retried on 429, 529, 5xx and connection errors with a doubling
//! backoff that a server's `retry-after` overrides. The API key goes only
//! into a header marked sensitive, never into logs or error text.

use std::time::Duration;

/// The Anthropic API version header value.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
/// The longest `retry-after` honoured, so a caller cannot hang for hours.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// How the API key is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// `x-api-key` plus `anthropic-version` (Anthropic Messages API).
    AnthropicKey,
    /// `Authorization: Bearer …` (OpenAI-compatible endpoints).
    Bearer,
}

/// How often and how patiently to retry.
#[derive(Clone, Copy, Debug)]
pub struct Retry {
    /// Tries per request, the first one included.
    pub max_tries: u32,
    /// First wait when the server gives no `retry-after`; doubles per try.
    pub backoff: Duration,
}

impl Retry {
    /// The wait before try `attempt + 1` without a `retry-after`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        self.backoff * 2u32.saturating_pow(attempt.saturating_sub(1))
    }
}

/// Why a POST failed; the message names the provider and the URL.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    /// The key cannot be put in an HTTP header.
    #[error("the API key holds characters not allowed in an HTTP header")]
    BadKey,
    /// The request failed for good (not retryable, or out of tries).
    #[error("{0}")]
    Failed(String),
}

/// POSTs `body` as JSON to `url` and returns the parsed JSON reply.
/// `name` (the provider) and `url` lead every error message.
pub async fn post_json(
    client: &reqwest::Client,
    name: &str,
    url: &str,
    auth: Auth,
    key: &str,
    body: &serde_json::Value,
    retry: Retry,
) -> Result<serde_json::Value, PostError> {
    let mut last_error = String::new();
    for attempt in 1..=retry.max_tries {
        let req = client.post(url).json(body);
        let req = match auth {
            Auth::AnthropicKey => req
                .header("x-api-key", sensitive(key)?)
                .header("anthropic-version", ANTHROPIC_VERSION),
            Auth::Bearer => req.header(
                reqwest::header::AUTHORIZATION,
                sensitive(&format!("Bearer {key}"))?,
            ),
        };
        let wait = match req.send().await {
            Err(e) => {
                // reqwest's error text names the URL, never the headers.
                last_error = redact(&format!("request failed: {e}"), key);
                if !(e.is_connect() || e.is_timeout() || e.is_request()) {
                    break;
                }
                retry.backoff(attempt)
            }
            Ok(resp) => {
                let status = resp.status();
                let retry_after = parse_retry_after(resp.headers());
                let text = resp.text().await.map_err(|e| {
                    PostError::Failed(format!("{name} at {url}: reading the response: {e}"))
                })?;
                if status.is_success() {
                    return serde_json::from_str(&text).map_err(|e| {
                        PostError::Failed(format!(
                            "{name} at {url}: the response is not JSON ({e}): {}",
                            clip(&redact(&text, key), 200)
                        ))
                    });
                }
                // A server may echo the key it refused (some proxies do);
                // the message ends up in logs, Events and status fields.
                last_error = format!(
                    "HTTP {}: {}",
                    status.as_u16(),
                    redact(&provider_message(&redact(&text, key)), key)
                );
                let code = status.as_u16();
                if !(code == 429 || code == 529 || status.is_server_error()) {
                    return Err(PostError::Failed(format!("{name} at {url}: {last_error}")));
                }
                retry_after.unwrap_or_else(|| retry.backoff(attempt))
            }
        };
        if attempt < retry.max_tries {
            tracing::warn!(attempt, ?wait, "LLM call: {last_error}; retrying");
            tokio::time::sleep(wait).await;
        }
    }
    Err(PostError::Failed(format!(
        "{name} at {url}: giving up after {} tries: {last_error}",
        retry.max_tries
    )))
}

/// `s` with every occurrence of `key` replaced by `[REDACTED]`. Keys
/// shorter than 6 bytes are not searched for: replacing every `a` of a
/// message would make it unreadable, and no real key is that short.
pub fn redact(s: &str, key: &str) -> String {
    if key.len() < 6 {
        return s.to_string();
    }
    s.replace(key, "[REDACTED]")
}

/// A `retry-after` in seconds, capped at [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s).min(MAX_RETRY_AFTER))
}

/// A header value marked sensitive, so it is redacted from any Debug output.
fn sensitive(v: &str) -> Result<reqwest::header::HeaderValue, PostError> {
    let mut h = reqwest::header::HeaderValue::from_str(v).map_err(|_| PostError::BadKey)?;
    h.set_sensitive(true);
    Ok(h)
}

/// At most `n` characters of `s`, with `…` when cut.
pub fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(n).collect();
        out.push('…');
        out
    }
}

/// The error message a provider put in its error body (both formats use
/// `{"error":{"message":…}}`), else the body itself, clipped.
pub fn provider_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| clip(body.trim(), 300))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_the_key_everywhere() {
        let key = "sk-test-123456";
        let body = format!(r#"{{"error":{{"message":"invalid x-api-key {key} (Bearer {key})"}}}}"#);
        let msg = redact(&provider_message(&redact(&body, key)), key);
        assert!(!msg.contains(key), "{msg}");
        assert_eq!(msg, "invalid x-api-key [REDACTED] (Bearer [REDACTED])");
        assert_eq!(redact("a b a", "a"), "a b a");
    }
}
