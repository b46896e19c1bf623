//! The JWKS cache of auth.md §5, shared by every shard of the process.
//!
//! Fetching is blocking IO (ureq over std sockets, rustls with ring for `https`), so it runs on
//! one dedicated thread per JWKS URL and never on a glommio executor. Executors read the current
//! key set under a short mutex and, when they need a fresh set, register a waiter and await it
//! asynchronously; the fetch thread answers all waiters of one fetch at once.
//!
//! Timeline of one key set: fetched at `t`; refreshed in the background from `t + 80 %` of
//! `STARCITE_AUTH_JWKS_REFRESH_MS`; valid until `t + refresh`; while refreshes fail (connection
//! error, timeout, non-`200`) still used until `t + refresh + STARCITE_AUTH_JWKS_STALE_MAX_MS`;
//! after that service JWTs fail until a fetch succeeds. A `200` with an invalid document
//! replaces the set with an empty one at once (fail closed).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;
use serde_json::Value;

use super::AuthSetupError;

/// Whole-request timeout of one fetch (auth.md §5).
pub const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Redirects followed by one fetch (auth.md §5).
pub const JWKS_REDIRECTS_MAX: u32 = 3;
/// Largest JWKS document read; a larger body is refused like an invalid document.
pub const JWKS_BODY_BYTES_MAX: u64 = 1024 * 1024;
/// Most keys in one JWKS document; more is refused like an invalid document.
pub const JWKS_KEYS_MAX: usize = 256;
/// Requests may force a fetch (unknown `kid`, no usable set) at most once per this window per
/// URL, so a flood of made-up `kid`s cannot become a flood of fetches.
pub const REQUESTED_FETCH_INTERVAL: Duration = Duration::from_secs(5);
/// Pause before retrying a failed background refresh, at most; shorter lifetimes retry sooner.
pub const FAILED_REFRESH_RETRY_MAX: Duration = Duration::from_secs(5);
/// Shortest pause between background fetches, so a tiny refresh setting cannot spin.
pub const BACKGROUND_FETCH_INTERVAL_MIN: Duration = Duration::from_millis(100);
/// Background refresh starts at this share of the lifetime, in percent.
pub const BACKGROUND_REFRESH_PERCENT: u32 = 80;

/// The verified keys of one JWKS document, by `kid`.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: HashMap<String, DecodingKey>,
}

impl KeySet {
    /// The key named `kid`.
    pub fn get(&self, kid: &str) -> Option<&DecodingKey> {
        self.keys.get(kid)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when the set holds no key (after an invalid document).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Why a fetch produced no new key set.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Connection error, timeout, redirect loop or non-`200`: the previous set stays (stale).
    #[error("{0}")]
    Unreachable(String),
    /// A `200` whose document breaks the rules of auth.md §5: the set becomes empty.
    #[error("{0}")]
    InvalidDocument(String),
}

/// Parse and check a JWKS document (auth.md §5 "Document"). Any bad key or duplicate `kid`
/// rejects the whole document.
pub fn parse_document(body: &[u8]) -> Result<KeySet, FetchError> {
    let invalid = |reason: &str| FetchError::InvalidDocument(reason.to_owned());
    let document: Value =
        serde_json::from_slice(body).map_err(|_| invalid("document is not JSON"))?;
    let Some(Value::Array(entries)) = document.get("keys") else {
        return Err(invalid("document has no keys array"));
    };
    if entries.is_empty() {
        return Err(invalid("keys array is empty"));
    }
    if entries.len() > JWKS_KEYS_MAX {
        return Err(invalid("too many keys"));
    }
    let mut keys = HashMap::with_capacity(entries.len());
    for entry in entries {
        let text = |name: &str| {
            entry
                .get(name)
                .and_then(Value::as_str)
                .filter(|value| !value.is_empty())
        };
        if text("kty") != Some("RSA") || text("use") != Some("sig") || text("alg") != Some("RS256")
        {
            return Err(invalid("key is not an RSA RS256 signing key"));
        }
        let (Some(kid), Some(modulus), Some(exponent)) = (text("kid"), text("n"), text("e")) else {
            return Err(invalid("key lacks kid, n or e"));
        };
        let key = DecodingKey::from_rsa_components(modulus, exponent)
            .map_err(|_| invalid("key has an unreadable n or e"))?;
        if keys.insert(kid.to_owned(), key).is_some() {
            return Err(invalid("duplicate kid"));
        }
    }
    Ok(KeySet { keys })
}

/// Identity of a cache in the process-wide registry.
#[derive(Clone, Debug, PartialEq, Eq)]
struct CacheSettings {
    url: String,
    refresh: Duration,
    stale_max: Duration,
}

struct CacheState {
    keys: Option<Arc<KeySet>>,
    fetched_at: Option<Instant>,
    fetch_in_flight: bool,
    last_requested_fetch_at: Option<Instant>,
    /// One entry per request awaiting the fetch in flight; bounded by the open connections.
    waiters: Vec<flume::Sender<()>>,
}

struct Shared {
    settings: CacheSettings,
    state: Mutex<CacheState>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, CacheState> {
        // No code panics while holding the lock; if one ever did, the state is still coherent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn usable_keys(&self, now: Instant) -> Option<Arc<KeySet>> {
        usable(&self.lock(), &self.settings, now)
    }

    /// Record a fetch outcome, wake its waiters, and return when the next background fetch is
    /// due.
    fn finish_fetch(&self, outcome: Result<KeySet, FetchError>, now: Instant) -> Instant {
        let settings = &self.settings;
        let lifetime_share = settings.refresh * BACKGROUND_REFRESH_PERCENT / 100;
        let next_delay = match outcome {
            Ok(keys) => {
                let mut state = self.lock();
                state.keys = Some(Arc::new(keys));
                state.fetched_at = Some(now);
                lifetime_share
            }
            Err(error) => {
                tracing::warn!("JWKS refresh failed for {}: {error}", settings.url);
                let mut state = self.lock();
                if let FetchError::InvalidDocument(_) = error {
                    state.keys = Some(Arc::new(KeySet::default()));
                    state.fetched_at = Some(now);
                }
                (settings.refresh / 5).min(FAILED_REFRESH_RETRY_MAX)
            }
        };
        let waiters = {
            let mut state = self.lock();
            state.fetch_in_flight = false;
            std::mem::take(&mut state.waiters)
        };
        for waiter in waiters {
            let _ = waiter.send(());
        }
        now + next_delay.max(BACKGROUND_FETCH_INTERVAL_MIN)
    }
}

fn usable(state: &CacheState, settings: &CacheSettings, now: Instant) -> Option<Arc<KeySet>> {
    let fetched_at = state.fetched_at?;
    let usable_until = fetched_at + settings.refresh + settings.stale_max;
    (now < usable_until).then(|| state.keys.clone()).flatten()
}

/// One URL's key cache and the handle to its fetch thread. The thread stops when the last
/// handle is dropped.
pub struct JwksCache {
    shared: Arc<Shared>,
    fetch_requests: flume::Sender<()>,
}

/// Every live cache, so that all shards (and all servers) of a process share one cache and one
/// fetch thread per URL.
static REGISTRY: Mutex<Vec<(CacheSettings, Weak<JwksCache>)>> = Mutex::new(Vec::new());

impl JwksCache {
    /// The process-wide cache for `url`, created (and its first fetch started) on first use.
    pub fn shared(
        url: &str,
        refresh: Duration,
        stale_max: Duration,
    ) -> Result<Arc<JwksCache>, AuthSetupError> {
        let settings = CacheSettings {
            url: url.to_owned(),
            refresh,
            stale_max,
        };
        let mut registry = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
        registry.retain(|(_, cache)| cache.strong_count() > 0);
        if let Some(cache) = registry
            .iter()
            .filter(|(existing, _)| *existing == settings)
            .find_map(|(_, cache)| cache.upgrade())
        {
            return Ok(cache);
        }
        let cache = Arc::new(JwksCache::start(settings.clone())?);
        registry.push((settings, Arc::downgrade(&cache)));
        Ok(cache)
    }

    fn start(settings: CacheSettings) -> Result<JwksCache, AuthSetupError> {
        let shared = Arc::new(Shared {
            settings,
            state: Mutex::new(CacheState {
                keys: None,
                fetched_at: None,
                // The thread fetches at once; early requests wait for that fetch.
                fetch_in_flight: true,
                last_requested_fetch_at: None,
                waiters: Vec::new(),
            }),
        });
        let (fetch_requests, requested) = flume::unbounded();
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("jwks-fetch".to_owned())
            .spawn(move || run_fetcher(&thread_shared, &requested))
            .map_err(AuthSetupError::FetchThread)?;
        Ok(JwksCache {
            shared,
            fetch_requests,
        })
    }

    /// The current set, if it is within its lifetime or its staleness allowance.
    pub fn usable_keys(&self) -> Option<Arc<KeySet>> {
        self.shared.usable_keys(Instant::now())
    }

    /// Ask for a fetch and wait for it, unless one was requested within
    /// [`REQUESTED_FETCH_INTERVAL`]; a fetch already in flight is shared. Returns the set usable
    /// afterwards.
    pub async fn refresh(&self) -> Option<Arc<KeySet>> {
        let now = Instant::now();
        let waiter = {
            let mut state = self.shared.lock();
            if !state.fetch_in_flight {
                let rate_limited = state
                    .last_requested_fetch_at
                    .is_some_and(|at| now.duration_since(at) < REQUESTED_FETCH_INTERVAL);
                if rate_limited {
                    return usable(&state, &self.shared.settings, now);
                }
                state.last_requested_fetch_at = Some(now);
                state.fetch_in_flight = true;
                if self.fetch_requests.send(()).is_err() {
                    state.fetch_in_flight = false;
                    return usable(&state, &self.shared.settings, now);
                }
            }
            let (wake, woken) = flume::bounded(1);
            state.waiters.push(wake);
            woken
        };
        // An error means the fetch thread is gone; the set as it stands is the answer.
        let _ = waiter.recv_async().await;
        self.usable_keys()
    }
}

fn run_fetcher(shared: &Shared, requested: &flume::Receiver<()>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(JWKS_FETCH_TIMEOUT))
        .max_redirects(JWKS_REDIRECTS_MAX)
        .http_status_as_error(false)
        .build()
        .into();
    let mut next_background = Instant::now();
    loop {
        let wait = next_background.saturating_duration_since(Instant::now());
        match requested.recv_timeout(wait) {
            Ok(()) | Err(flume::RecvTimeoutError::Timeout) => {}
            Err(flume::RecvTimeoutError::Disconnected) => return,
        }
        // Requests queued meanwhile are all served by this one fetch.
        while requested.try_recv().is_ok() {}
        shared.lock().fetch_in_flight = true;
        let outcome = fetch(&agent, &shared.settings.url);
        next_background = shared.finish_fetch(outcome, Instant::now());
    }
}

fn fetch(agent: &ureq::Agent, url: &str) -> Result<KeySet, FetchError> {
    let unreachable = |error: ureq::Error| FetchError::Unreachable(error.to_string());
    let mut response = agent
        .get(url)
        .header("accept", "application/json")
        .call()
        .map_err(unreachable)?;
    let status = response.status().as_u16();
    if status != 200 {
        return Err(FetchError::Unreachable(format!("HTTP status {status}")));
    }
    let body = response
        .body_mut()
        .with_config()
        .limit(JWKS_BODY_BYTES_MAX)
        .read_to_vec()
        .map_err(|error| match error {
            ureq::Error::BodyExceedsLimit(_) => {
                FetchError::InvalidDocument(format!("body over {JWKS_BODY_BYTES_MAX} bytes"))
            }
            other => unreachable(other),
        })?;
    parse_document(&body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(kid: &str) -> Value {
        json!({"kty":"RSA","kid":kid,"use":"sig","alg":"RS256","n":"sXch","e":"AQAB"})
    }

    fn parse(document: Value) -> Result<KeySet, FetchError> {
        parse_document(document.to_string().as_bytes())
    }

    #[test]
    fn valid_documents_load_every_key() {
        let keys = parse(json!({"keys":[key("a"), key("b")]}));
        assert!(matches!(keys, Ok(ref set) if set.len() == 2 && set.get("b").is_some()));
    }

    #[test]
    fn one_bad_key_rejects_the_whole_document() {
        let without = |field: &str| {
            let mut bad = key("b");
            bad.as_object_mut().map(|object| object.remove(field));
            json!({"keys":[key("a"), bad]})
        };
        let mut documents = vec![
            json!({}),
            json!({"keys":[]}),
            json!({"keys":"x"}),
            json!({"keys":[key("a"), key("a")]}),
            json!({"keys":[key("a"), {"kty":"EC","kid":"b","use":"sig","alg":"RS256","n":"x","e":"y"}]}),
        ];
        for field in ["kty", "kid", "use", "alg", "n", "e"] {
            documents.push(without(field));
        }
        for document in documents {
            assert!(
                matches!(parse(document.clone()), Err(FetchError::InvalidDocument(_))),
                "{document}"
            );
        }
        assert!(matches!(
            parse_document(b"not json"),
            Err(FetchError::InvalidDocument(_))
        ));
    }
}
