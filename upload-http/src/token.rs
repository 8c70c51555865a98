//! Stateless slot tokens: `v1.<claims>.<mac>` where claims are base64url JSON
//! and mac is HMAC-SHA256 over `v1.<claims>` with the configured key. Any
//! mftd process holding the key can verify a slot another one issued; no
//! slot state is kept anywhere.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// What a PUT is allowed to do: one file, one size, one type, until expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotClaims {
    /// The resource name (carries the storage location and chat type).
    #[serde(rename = "r")]
    pub resource: String,
    /// The sanitised file name that ends the URL.
    #[serde(rename = "n")]
    pub filename: String,
    /// Exact size in bytes.
    #[serde(rename = "s")]
    pub size: u64,
    /// The declared Content-Type, if the client gave one.
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The requesting JID.
    #[serde(rename = "u")]
    pub uploader: String,
    /// The intended recipient, empty when not given.
    #[serde(rename = "d", default)]
    pub to: String,
    /// Unix seconds after which the slot is void.
    #[serde(rename = "e")]
    pub expires: u64,
    /// The XEP-0363 1.2 purpose when not `message` (`profile`,
    /// `ephemeral`, `permanent`).
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// Unix seconds by which an ephemeral upload must be gone.
    #[serde(rename = "x", default, skip_serializing_if = "Option::is_none")]
    pub expire_before: Option<u64>,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token of ours at all.
    #[error("malformed upload token")]
    Malformed,
    /// The signature does not match: forged or altered.
    #[error("upload token signature does not match")]
    BadSignature,
    /// The slot's time is up.
    #[error("upload slot expired")]
    Expired,
}

const VERSION: &str = "v1";

/// Signs slot tokens with one secret key and verifies them with it or
/// with a previous key (key rotation: slots signed before the change stay
/// valid until they expire).
#[derive(Clone)]
pub struct SlotSigner {
    key: Vec<u8>,
    previous: Vec<Vec<u8>>,
}

impl std::fmt::Debug for SlotSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SlotSigner(<redacted>)")
    }
}

impl SlotSigner {
    /// A signer with `key` (at least 16 bytes; the config checks this).
    pub fn new(key: &[u8]) -> SlotSigner {
        SlotSigner {
            key: key.to_vec(),
            previous: Vec::new(),
        }
    }

    /// Also accepts tokens signed with any of `keys` (never signs with them).
    pub fn with_previous(mut self, keys: impl IntoIterator<Item = Vec<u8>>) -> SlotSigner {
        self.previous = keys.into_iter().collect();
        self
    }

    fn mac(key: &[u8], signed: &str) -> Hmac<Sha256> {
        // HMAC accepts keys of any length.
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(signed.as_bytes());
        mac
    }

    /// The token for `claims`.
    pub fn sign(&self, claims: &SlotClaims) -> String {
        let json = serde_json::to_vec(claims).unwrap_or_default();
        let signed = format!("{VERSION}.{}", URL_SAFE_NO_PAD.encode(json));
        let tag = URL_SAFE_NO_PAD.encode(Self::mac(&self.key, &signed).finalize().into_bytes());
        format!("{signed}.{tag}")
    }

    /// The claims of a genuine, unexpired token (`now` in Unix seconds).
    pub fn verify(&self, token: &str, now: u64) -> Result<SlotClaims, TokenError> {
        let (signed, tag) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let (version, payload) = signed.split_once('.').ok_or(TokenError::Malformed)?;
        if version != VERSION {
            return Err(TokenError::Malformed);
        }
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| TokenError::Malformed)?;
        let genuine = std::iter::once(&self.key)
            .chain(&self.previous)
            .any(|key| Self::mac(key, signed).verify_slice(&tag).is_ok());
        if !genuine {
            return Err(TokenError::BadSignature);
        }
        let json = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Malformed)?;
        let claims: SlotClaims =
            serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
        if now > claims.expires {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> SlotClaims {
        SlotClaims {
            resource: "20261126-05-im-AAAAAAAAAAAAAAAAAAAAAA".into(),
            filename: "Résumé final.pdf".into(),
            size: 1234,
            content_type: Some("application/pdf".into()),
            uploader: "alice@example.test/phone".into(),
            to: String::new(),
            expires: 1000,
            purpose: None,
            expire_before: None,
        }
    }

    #[test]
    fn previous_keys_verify_and_never_sign() {
        let old = SlotSigner::new(b"old-key-0123456789abcdef");
        let retired = SlotSigner::new(b"retired-key-0123456789ab");
        let new = SlotSigner::new(b"new-key-0123456789abcdef")
            .with_previous([b"old-key-0123456789abcdef".to_vec()]);
        let by_old = old.sign(&claims());
        assert_eq!(new.verify(&by_old, 999), Ok(claims()));
        assert_eq!(
            new.verify(&retired.sign(&claims()), 999),
            Err(TokenError::BadSignature)
        );
        let by_new = new.sign(&claims());
        assert_eq!(old.verify(&by_new, 999), Err(TokenError::BadSignature));
    }

    #[test]
    fn round_trip() {
        let signer = SlotSigner::new(b"0123456789abcdef0123");
        let token = signer.sign(&claims());
        assert!(token.starts_with("v1."));
        assert_eq!(signer.verify(&token, 999), Ok(claims()));
        assert_eq!(signer.verify(&token, 1000), Ok(claims()));
    }

    #[test]
    fn expired() {
        let signer = SlotSigner::new(b"0123456789abcdef0123");
        let token = signer.sign(&claims());
        assert_eq!(signer.verify(&token, 1001), Err(TokenError::Expired));
    }

    #[test]
    fn tampered_claims_or_other_key() {
        let signer = SlotSigner::new(b"0123456789abcdef0123");
        let token = signer.sign(&claims());
        let mut bigger = claims();
        bigger.size = 10_000_000;
        let forged_payload = signer.sign(&bigger);
        // Graft the bigger claims onto the original signature.
        let (_, tag) = token.rsplit_once('.').expect("tag");
        let (forged_signed, _) = forged_payload.rsplit_once('.').expect("tag");
        let forged = format!("{forged_signed}.{tag}");
        assert_eq!(signer.verify(&forged, 0), Err(TokenError::BadSignature));
        let other = SlotSigner::new(b"another key of sufficient size");
        assert_eq!(other.verify(&token, 0), Err(TokenError::BadSignature));
        // A flipped bit in the tag.
        let mut bytes = token.clone().into_bytes();
        let last = bytes.len() - 2;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(bytes).expect("ascii");
        assert_eq!(signer.verify(&flipped, 0), Err(TokenError::BadSignature));
    }

    #[test]
    fn garbage() {
        let signer = SlotSigner::new(b"0123456789abcdef0123");
        for bad in [
            "",
            "v1",
            "v1.x",
            "v2.abc.def",
            "v1.!!!.abc",
            "v1..",
            "Bearer x",
        ] {
            assert!(signer.verify(bad, 0).is_err(), "{bad:?}");
        }
    }
}
