//! SigV4 signing of S3 requests with `aws-sigv4`.

use std::time::SystemTime;

use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;

use super::S3Credentials;
use crate::ArchiveError;

/// The SigV4 service name of S3.
const SERVICE_NAME: &str = "s3";

/// Signs requests for one region with one set of credentials.
pub(crate) struct Signer {
    identity: Identity,
    region: String,
}

impl Signer {
    pub(crate) fn new(credentials: &S3Credentials, region: String) -> Signer {
        let credentials = aws_credential_types::Credentials::new(
            credentials.access_key_id.clone(),
            credentials.secret_access_key.clone(),
            credentials.session_token.clone(),
            None,
            "starcite",
        );
        Signer {
            identity: credentials.into(),
            region,
        }
    }

    /// Returns the headers to add to the request (`authorization`, `x-amz-date`,
    /// `x-amz-content-sha256` and, with a session token, `x-amz-security-token`).
    ///
    /// `url` is the full request URL (`scheme://host[:port]/path`); `headers` must include `host` with
    /// exactly the value that is sent.
    pub(crate) fn sign(
        &self,
        method: &str,
        url: &str,
        headers: &[(String, String)],
        body: &[u8],
        operation: &str,
    ) -> Result<Vec<(String, String)>, ArchiveError> {
        let signing_error = |message: String| ArchiveError::Signature {
            operation: operation.to_owned(),
            message,
        };
        let mut settings = SigningSettings::default();
        // S3 decodes the path once, expects it unnormalised, and requires the payload hash header.
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let parameters = v4::SigningParams::builder()
            .identity(&self.identity)
            .region(&self.region)
            .name(SERVICE_NAME)
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|error| signing_error(error.to_string()))?
            .into();
        let signable = SignableRequest::new(
            method,
            url,
            headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str())),
            SignableBody::Bytes(body),
        )
        .map_err(|error| signing_error(error.to_string()))?;
        let (instructions, _signature) = sign(signable, &parameters)
            .map_err(|error| signing_error(error.to_string()))?
            .into_parts();
        Ok(instructions
            .headers()
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect())
    }
}
