//! The `s3` adapter (`contract/archive.md` §5): the chunk layout of [`crate::format`] as S3 objects.
//!
//! ```text
//! <P>/events/v1/<b64(id)>/<chunk_start>.ndjson   Content-Type: application/x-ndjson
//! <P>/sessions/v1/<b64(id)>.json                  Content-Type: application/json
//! ```
//!
//! Writes are read-merge-write per chunk made safe against concurrent writers by conditional PUTs:
//! `If-None-Match: *` when the chunk did not exist, `If-Match: <etag>` otherwise. A 409 or 412 answer
//! means another writer got there first, so the chunk is read and merged again, up to
//! `max_write_retries` extra times.
//!
//! Requests are signed with SigV4 ([`signing`]) and sent by the small blocking client in [`http`].

mod http;
mod signing;

use std::fmt;
use std::time::Duration;

use crate::format::{self, chunk_file_name};
use crate::{ArchiveAdapter, ArchiveError, ArchivedEvent, SessionCatalog};
use http::{HttpClient, Request, Response, Scheme};
use signing::Signer;

/// `STARCITE_S3_PREFIX` when unset or empty after trimming.
pub const DEFAULT_PREFIX: &str = "starcite";

/// `STARCITE_S3_MAX_WRITE_RETRIES` default: extra read-merge-write attempts after a 409/412.
pub const DEFAULT_MAX_WRITE_RETRIES: u32 = 4;

/// The region used when neither the configuration nor `AWS_REGION`/`AWS_DEFAULT_REGION` name one.
pub const DEFAULT_REGION: &str = "us-east-1";

/// Time limit of one HTTP request, from connecting to the last byte of the response.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// `Content-Type` of chunk objects, exactly (no parameters).
const CHUNK_CONTENT_TYPE: &str = "application/x-ndjson";

/// `Content-Type` of catalog objects, exactly (no parameters).
const CATALOG_CONTENT_TYPE: &str = "application/json";

/// Sent as `User-Agent` so that server logs show who wrote.
const USER_AGENT: &str = concat!("starcite-archive/", env!("CARGO_PKG_VERSION"));

/// Static credentials for SigV4.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl fmt::Debug for S3Credentials {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Secrets never reach logs.
        formatter
            .debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl S3Credentials {
    /// Credentials from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`.
    pub fn from_environment() -> Option<S3Credentials> {
        S3Credentials::from_lookup(|name| std::env::var(name).ok())
    }

    /// Credentials from the `AWS_*` variables as returned by `lookup`; empty values count as unset.
    /// `None` unless both the key id and the secret are set.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Option<S3Credentials> {
        let value = |name: &str| lookup(name).filter(|value| !value.is_empty());
        Some(S3Credentials {
            access_key_id: value("AWS_ACCESS_KEY_ID")?,
            secret_access_key: value("AWS_SECRET_ACCESS_KEY")?,
            session_token: value("AWS_SESSION_TOKEN"),
        })
    }
}

/// Configuration of the S3 adapter (the `STARCITE_S3_*` variables of `contract/config.md` §4.3).
#[derive(Clone, Debug)]
pub struct S3Config {
    pub bucket: String,
    /// Object key prefix `P`; normalised with [`normalize_prefix`] when the adapter is built.
    pub prefix: String,
    pub region: String,
    /// `http(s)://host[:port]`; `None` means AWS (`https://s3.<region>.amazonaws.com`).
    pub endpoint: Option<String>,
    /// `true`: `/<bucket>/<key>` on the endpoint host; `false`: `<bucket>.<host>/<key>`.
    pub path_style: bool,
    /// `None`: the `AWS_*` environment variables ([`S3Credentials::from_environment`]).
    pub credentials: Option<S3Credentials>,
    pub max_write_retries: u32,
    pub request_timeout: Duration,
}

impl S3Config {
    /// The defaults of the contract for `bucket`, with the region from [`default_region`].
    pub fn new(bucket: impl Into<String>) -> S3Config {
        S3Config {
            bucket: bucket.into(),
            prefix: DEFAULT_PREFIX.to_owned(),
            region: default_region(),
            endpoint: None,
            path_style: true,
            credentials: None,
            max_write_retries: DEFAULT_MAX_WRITE_RETRIES,
            request_timeout: REQUEST_TIMEOUT,
        }
    }
}

/// `AWS_REGION`, else `AWS_DEFAULT_REGION`, else `us-east-1`.
pub fn default_region() -> String {
    ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .iter()
        .filter_map(|name| std::env::var(name).ok())
        .find(|value| !value.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_REGION.to_owned())
}

/// Trims whitespace and `/` from both ends until neither remains (` /cluster3/ ` → `cluster3`, `a/b/`
/// → `a/b`); an empty result gives [`DEFAULT_PREFIX`].
pub fn normalize_prefix(raw: &str) -> String {
    let trimmed = raw.trim_matches(|character: char| character.is_whitespace() || character == '/');
    if trimmed.is_empty() {
        DEFAULT_PREFIX.to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// A parsed `http(s)://host[:port]` endpoint.
#[derive(Debug, PartialEq, Eq)]
struct Endpoint {
    scheme: Scheme,
    /// Host name or IP address; IPv6 without brackets.
    host: String,
    port: u16,
}

impl Endpoint {
    /// Parses `STARCITE_S3_ENDPOINT`: scheme `http` or `https`, a host, an optional port, and a path
    /// that is empty or `/`.
    fn parse(raw: &str) -> Result<Endpoint, ArchiveError> {
        let invalid = || ArchiveError::Config {
            message: format!(
                "invalid endpoint for S3 archive adapter: {raw:?} (expected http(s)://host[:port])"
            ),
        };
        let (scheme, rest) = if let Some(rest) = raw.strip_prefix("https://") {
            (Scheme::Https, rest)
        } else if let Some(rest) = raw.strip_prefix("http://") {
            (Scheme::Http, rest)
        } else {
            return Err(invalid());
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty()
            || authority.contains(['/', '?', '#', '@'])
            || authority.contains(char::is_whitespace)
        {
            return Err(invalid());
        }
        let (host, port_text) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed.split_once(']').ok_or_else(invalid)?;
            match after {
                "" => (host, None),
                _ => (host, Some(after.strip_prefix(':').ok_or_else(invalid)?)),
            }
        } else {
            match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(invalid());
        }
        let port = match port_text {
            None => scheme.default_port(),
            Some(text) => text
                .parse::<u16>()
                .ok()
                .filter(|&port| port > 0)
                .ok_or_else(invalid)?,
        };
        Ok(Endpoint {
            scheme,
            host: host.to_owned(),
            port,
        })
    }

    /// The `Host` header for `host`: brackets around IPv6, the port unless it is the scheme's default.
    fn host_header(&self, host: &str) -> String {
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        if self.port == self.scheme.default_port() {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// Percent-encodes an object key for the request path; `/` separates segments and stays.
fn encode_path(key: &str) -> String {
    let mut encoded = String::with_capacity(key.len());
    for &byte in key.as_bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~' | b'/') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// An object as read: its body and ETag.
struct StoredObject {
    body: Vec<u8>,
    etag: Option<String>,
}

/// The condition of a PUT.
enum PutCondition {
    /// `If-None-Match: *`: only if the object does not exist.
    Absent,
    /// `If-Match: <etag>`: only if the object is unchanged since it was read.
    Unchanged(String),
}

/// What a conditional PUT did.
enum PutOutcome {
    Stored,
    /// 409 or 412: another writer changed the object (or created it) first.
    ConditionFailed,
}

/// S3 error codes that mean the credentials or the signature are wrong.
const AUTHENTICATION_ERROR_CODES: &[&str] = &[
    "AccessDenied",
    "AuthorizationHeaderMalformed",
    "ExpiredToken",
    "InvalidAccessKeyId",
    "InvalidToken",
    "SignatureDoesNotMatch",
];

/// The `s3` archive adapter.
pub struct S3Adapter {
    client: HttpClient,
    signer: Signer,
    bucket: String,
    prefix: String,
    /// `scheme://host[:port]` as signed.
    url_base: String,
    host_header: String,
    /// `/<bucket>` with path-style addressing, empty with virtual-host addressing.
    bucket_path: String,
    max_write_retries: u32,
}

impl fmt::Debug for S3Adapter {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("S3Adapter")
            .field("url_base", &self.url_base)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl S3Adapter {
    /// Builds the adapter. No request is sent until the first operation.
    pub fn new(config: S3Config) -> Result<S3Adapter, ArchiveError> {
        if config.bucket.is_empty() {
            return Err(ArchiveError::Config {
                message: "the S3 bucket name is empty".to_owned(),
            });
        }
        let credentials = config
            .credentials
            .clone()
            .or_else(S3Credentials::from_environment)
            .ok_or_else(|| ArchiveError::Config {
                message: "no S3 credentials: set STARCITE_S3_ACCESS_KEY_ID and STARCITE_S3_SECRET_ACCESS_KEY, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".to_owned(),
            })?;
        let endpoint = match &config.endpoint {
            Some(raw) => Endpoint::parse(raw)?,
            None => Endpoint {
                scheme: Scheme::Https,
                host: format!("s3.{}.amazonaws.com", config.region),
                port: Scheme::Https.default_port(),
            },
        };
        let (host, bucket_path) = if config.path_style {
            (
                endpoint.host.clone(),
                format!("/{}", encode_path(&config.bucket)),
            )
        } else {
            (
                format!("{}.{}", config.bucket, endpoint.host),
                String::new(),
            )
        };
        let host_header = endpoint.host_header(&host);
        let url_base = format!("{}://{host_header}", endpoint.scheme.as_str());
        let client = HttpClient::new(endpoint.scheme, host, endpoint.port, config.request_timeout)?;
        Ok(S3Adapter {
            client,
            signer: Signer::new(&credentials, config.region.clone()),
            bucket: config.bucket,
            prefix: normalize_prefix(&config.prefix),
            url_base,
            host_header,
            bucket_path,
            max_write_retries: config.max_write_retries,
        })
    }

    /// The object key of a chunk: `<P>/events/v1/<b64(id)>/<chunk_start>.ndjson`.
    pub fn chunk_key(&self, session_id: &str, chunk_start: u64) -> String {
        format!(
            "{}/events/v1/{}/{}",
            self.prefix,
            format::encode_session_id(session_id),
            chunk_file_name(chunk_start)
        )
    }

    /// The object key of a catalog record: `<P>/sessions/v1/<b64(id)>.json`.
    pub fn catalog_key(&self, session_id: &str) -> String {
        format!(
            "{}/sessions/v1/{}.json",
            self.prefix,
            format::encode_session_id(session_id)
        )
    }

    /// Signs and sends one request for `key`.
    fn send(
        &self,
        method: &'static str,
        key: &str,
        extra_headers: &[(&str, &str)],
        body: &[u8],
        operation: &str,
    ) -> Result<Response, ArchiveError> {
        let path = format!("{}/{}", self.bucket_path, encode_path(key));
        let url = format!("{}{path}", self.url_base);
        let mut headers = vec![("host".to_owned(), self.host_header.clone())];
        headers.extend(
            extra_headers
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned())),
        );
        let signature_headers = self.signer.sign(method, &url, &headers, body, operation)?;
        headers.extend(signature_headers);
        headers.push(("user-agent".to_owned(), USER_AGENT.to_owned()));
        self.client.send(&Request {
            method,
            path: &path,
            headers: &headers,
            body,
            operation,
        })
    }

    fn operation_name(&self, method: &str, key: &str) -> String {
        format!("S3 {method} s3://{}/{key}", self.bucket)
    }

    /// GET an object: its body and ETag, `None` when it does not exist.
    fn get_object(&self, key: &str) -> Result<Option<StoredObject>, ArchiveError> {
        let operation = self.operation_name("GET", key);
        let response = self.send("GET", key, &[], &[], &operation)?;
        match response.status {
            200 => {
                let etag = response.header("etag").map(str::to_owned);
                Ok(Some(StoredObject {
                    body: response.body,
                    etag,
                }))
            }
            404 => {
                let (code, message) = error_code_and_message(&response.body);
                // A missing bucket is a configuration error, not an empty chunk.
                if code == "NoSuchBucket" {
                    return Err(ArchiveError::Http {
                        operation,
                        status: 404,
                        code,
                        message,
                    });
                }
                Ok(None)
            }
            _ => Err(error_from_response(operation, &response)),
        }
    }

    /// A conditional PUT.
    fn put_object(
        &self,
        key: &str,
        body: &[u8],
        content_type: &str,
        condition: &PutCondition,
    ) -> Result<PutOutcome, ArchiveError> {
        let operation = self.operation_name("PUT", key);
        let condition_header = match condition {
            PutCondition::Absent => ("if-none-match", "*"),
            PutCondition::Unchanged(etag) => ("if-match", etag.as_str()),
        };
        let response = self.send(
            "PUT",
            key,
            &[("content-type", content_type), condition_header],
            body,
            &operation,
        )?;
        match response.status {
            200..=299 => Ok(PutOutcome::Stored),
            409 | 412 => Ok(PutOutcome::ConditionFailed),
            _ => Err(error_from_response(operation, &response)),
        }
    }

    /// Read-merge-write of one chunk; returns the number of seqs added.
    fn write_chunk(
        &self,
        session_id: &str,
        chunk_start: u64,
        events: &[ArchivedEvent],
    ) -> Result<u64, ArchiveError> {
        let key = self.chunk_key(session_id, chunk_start);
        let attempt_count_max = self.max_write_retries.saturating_add(1);
        for _attempt in 0..attempt_count_max {
            let (stored, condition) = match self.get_object(&key)? {
                None => (Vec::new(), PutCondition::Absent),
                Some(StoredObject {
                    body,
                    etag: Some(etag),
                }) => (body, PutCondition::Unchanged(etag)),
                Some(StoredObject { etag: None, .. }) => {
                    return Err(ArchiveError::InvalidResponse {
                        operation: self.operation_name("GET", &key),
                        reason: "the response has no ETag, which a conditional write needs"
                            .to_owned(),
                    })
                }
            };
            let lines =
                format::parse_chunk(&stored, chunk_start, &format!("s3://{}/{key}", self.bucket))?;
            let (body, new_count) = format::merge_chunk(&lines, events);
            if new_count == 0 {
                return Ok(0);
            }
            match self.put_object(&key, &body, CHUNK_CONTENT_TYPE, &condition)? {
                PutOutcome::Stored => return Ok(new_count),
                PutOutcome::ConditionFailed => continue,
            }
        }
        Err(ArchiveError::WriteConflict {
            operation: self.operation_name("PUT", &key),
            attempt_count: attempt_count_max,
        })
    }
}

impl ArchiveAdapter for S3Adapter {
    fn name(&self) -> &'static str {
        "s3"
    }

    fn write_events(
        &self,
        session_id: &str,
        events: &[ArchivedEvent],
    ) -> Result<u64, ArchiveError> {
        format::validate_batch(events)?;
        let mut new_count = 0;
        for (chunk_start, run) in format::split_by_chunk(events) {
            new_count += self.write_chunk(session_id, chunk_start, run)?;
        }
        Ok(new_count)
    }

    fn read_events(
        &self,
        session_id: &str,
        from_seq: u64,
        to_seq: u64,
    ) -> Result<Vec<ArchivedEvent>, ArchiveError> {
        let mut events = Vec::new();
        for chunk_start in format::chunk_starts(from_seq, to_seq)? {
            let key = self.chunk_key(session_id, chunk_start);
            let Some(StoredObject { body, .. }) = self.get_object(&key)? else {
                continue;
            };
            let location = format!("s3://{}/{key}", self.bucket);
            let lines = format::parse_chunk(&body, chunk_start, &location)?;
            events.extend(format::chunk_events_in_range(
                &lines, from_seq, to_seq, &location,
            )?);
        }
        Ok(events)
    }

    fn write_catalog(&self, session: &SessionCatalog) -> Result<(), ArchiveError> {
        let body = format::render_catalog(session)?;
        let key = self.catalog_key(&session.id);
        match self.put_object(&key, &body, CATALOG_CONTENT_TYPE, &PutCondition::Absent)? {
            PutOutcome::Stored => Ok(()),
            // 412: a record exists already and the first write wins. (409 would be a concurrent
            // conditional write of the same key, which also means another writer is storing it.)
            PutOutcome::ConditionFailed => Ok(()),
        }
    }
}

/// Builds the error for an unexpected response, classifying credential and signature failures.
fn error_from_response(operation: String, response: &Response) -> ArchiveError {
    let (code, message) = error_code_and_message(&response.body);
    if response.status == 403 || AUTHENTICATION_ERROR_CODES.contains(&code.as_str()) {
        return ArchiveError::Authentication {
            operation,
            status: response.status,
            code,
            message,
        };
    }
    ArchiveError::Http {
        operation,
        status: response.status,
        code,
        message,
    }
}

/// `<Code>` and `<Message>` of an S3 XML error body (empty when absent).
fn error_code_and_message(body: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(body);
    let element = |name: &str| {
        let open = format!("<{name}>");
        let close = format!("</{name}>");
        text.split_once(&open)
            .and_then(|(_, rest)| rest.split_once(&close))
            .map(|(value, _)| unescape_xml(value))
            .unwrap_or_default()
    };
    (element("Code"), element("Message"))
}

fn unescape_xml(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_trimmed_as_the_contract_says() {
        assert_eq!(normalize_prefix(" /cluster3/ "), "cluster3");
        assert_eq!(normalize_prefix("a/b/"), "a/b");
        assert_eq!(normalize_prefix("/ \t/"), DEFAULT_PREFIX);
        assert_eq!(normalize_prefix(""), DEFAULT_PREFIX);
    }

    #[test]
    fn endpoints_parse_with_and_without_ports() {
        let endpoint = Endpoint::parse("http://127.0.0.1:9000").unwrap();
        assert_eq!(endpoint.scheme, Scheme::Http);
        assert_eq!(endpoint.host, "127.0.0.1");
        assert_eq!(endpoint.port, 9000);
        assert_eq!(endpoint.host_header("127.0.0.1"), "127.0.0.1:9000");

        let endpoint = Endpoint::parse("https://minio.example/").unwrap();
        assert_eq!(endpoint.port, 443);
        assert_eq!(
            endpoint.host_header("bucket.minio.example"),
            "bucket.minio.example"
        );

        let endpoint = Endpoint::parse("http://[::1]:9000").unwrap();
        assert_eq!(endpoint.host, "::1");
        assert_eq!(endpoint.host_header("::1"), "[::1]:9000");

        for invalid in [
            "minio:9000",
            "ftp://host",
            "http://",
            "http://host/path",
            "http://host:0",
            "http://host:99999",
            "http://user@host",
            "http://host?x",
        ] {
            let error = Endpoint::parse(invalid).unwrap_err();
            assert_eq!(
                error.to_string(),
                format!(
                    "invalid archive configuration: invalid endpoint for S3 archive adapter: {invalid:?} (expected http(s)://host[:port])"
                )
            );
        }
    }

    #[test]
    fn keys_are_percent_encoded_except_slashes() {
        assert_eq!(encode_path("a b/c+d/ü"), "a%20b/c%2Bd/%C3%BC");
        assert_eq!(
            encode_path("starcite/events/v1/c2VzLTE/1.ndjson"),
            "starcite/events/v1/c2VzLTE/1.ndjson"
        );
    }

    #[test]
    fn credentials_fall_back_to_the_aws_variables() {
        let lookup = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| (*value).to_owned())
            }
        };
        let credentials = S3Credentials::from_lookup(lookup(&[
            ("AWS_ACCESS_KEY_ID", "id"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("AWS_SESSION_TOKEN", "token"),
        ]))
        .unwrap();
        assert_eq!(credentials.access_key_id, "id");
        assert_eq!(credentials.session_token.as_deref(), Some("token"));
        assert!(!format!("{credentials:?}").contains("secret\""));
        assert!(S3Credentials::from_lookup(lookup(&[("AWS_ACCESS_KEY_ID", "id")])).is_none());
        assert!(S3Credentials::from_lookup(lookup(&[
            ("AWS_ACCESS_KEY_ID", "id"),
            ("AWS_SECRET_ACCESS_KEY", "")
        ]))
        .is_none());
    }

    #[test]
    fn error_bodies_give_code_and_message() {
        let body = b"<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code><Message>a &amp; b</Message></Error>";
        assert_eq!(
            error_code_and_message(body),
            ("SignatureDoesNotMatch".to_owned(), "a & b".to_owned())
        );
    }
}
