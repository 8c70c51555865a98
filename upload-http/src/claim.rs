//! Per-recipient download URLs. The router-side module (`router/prosody/
//! mod_mftd.lua`) appends `?for=<claim>` to each copy of a file's URL it
//! delivers to a local user; the claim names that user and is signed with a
//! key shared between the module and mftd, so a GET can be attributed to a
//! person. The claim is `<base64url(bare JID)>.<base64url(mac)>` where mac is
//! the first 16 bytes of HMAC-SHA256(key, "mftd-recipient-v1\n" + resource +
//! "\n" + bare JID): short, bound to one file and one person, and revealing
//! nothing but the recipient's own JID.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const CONTEXT: &str = "mftd-recipient-v1";
const MAC_BYTES: usize = 16;

/// Signs and checks recipient claims with the shared key.
#[derive(Clone)]
pub struct RecipientSigner {
    key: Vec<u8>,
}

impl std::fmt::Debug for RecipientSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecipientSigner(<key>)")
    }
}

/// Why a claim was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    /// Not a claim at all.
    #[error("malformed recipient claim")]
    Malformed,
    /// Signed for another file or person, or altered.
    #[error("recipient claim does not match this file")]
    BadSignature,
}

impl RecipientSigner {
    /// A signer with the shared key.
    pub fn new(key: &[u8]) -> Self {
        RecipientSigner { key: key.to_vec() }
    }

    fn mac(&self, resource: &str, recipient: &str) -> Hmac<Sha256> {
        // HMAC accepts keys of any length.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(format!("{CONTEXT}\n{resource}\n{recipient}").as_bytes());
        mac
    }

    /// The claim for `recipient` (a bare JID) on `resource`.
    pub fn claim(&self, resource: &str, recipient: &str) -> String {
        let tag = self.mac(resource, recipient).finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(recipient),
            URL_SAFE_NO_PAD.encode(&tag[..MAC_BYTES])
        )
    }

    /// The recipient a claim on `resource` names, if it is genuine.
    pub fn verify(&self, resource: &str, claim: &str) -> Result<String, ClaimError> {
        let (who, tag) = claim.split_once('.').ok_or(ClaimError::Malformed)?;
        let who = URL_SAFE_NO_PAD
            .decode(who)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or(ClaimError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| ClaimError::Malformed)?;
        if tag.len() != MAC_BYTES {
            return Err(ClaimError::Malformed);
        }
        self.mac(resource, &who)
            .verify_truncated_left(&tag)
            .map_err(|_| ClaimError::BadSignature)?;
        Ok(who)
    }
}

/// The `for=` claim in a request's query, if any.
pub fn claim_in_query(query: Option<&str>) -> Option<&str> {
    query?.split('&').find_map(|kv| kv.strip_prefix("for="))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_names_one_person_for_one_file() {
        let s = RecipientSigner::new(b"shared-key");
        let c = s.claim("20261126-08-im-abc", "bob@example.test");
        assert_eq!(
            s.verify("20261126-08-im-abc", &c).as_deref(),
            Ok("bob@example.test")
        );
        assert_eq!(
            s.verify("20261126-08-im-xyz", &c),
            Err(ClaimError::BadSignature)
        );
        let forged = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode("carol@example.test"),
            c.split_once('.').expect("dot").1
        );
        assert_eq!(
            s.verify("20261126-08-im-abc", &forged),
            Err(ClaimError::BadSignature)
        );
        assert_eq!(
            RecipientSigner::new(b"other").verify("20261126-08-im-abc", &c),
            Err(ClaimError::BadSignature)
        );
        assert_eq!(s.verify("r", "nodot"), Err(ClaimError::Malformed));
        assert_eq!(claim_in_query(Some("a=1&for=x.y")), Some("x.y"));
        assert_eq!(claim_in_query(None), None);
    }

    #[test]
    fn matches_the_prosody_module() {
        // The module computes the same claim with Prosody's util.hashes:
        // hmac_sha256("k", "mftd-recipient-v1\nR\nbob@example.test"):sub(1,16).
        let s = RecipientSigner::new(b"k");
        let c = s.claim("R", "bob@example.test");
        assert!(c.starts_with("Ym9iQGV4YW1wbGUudGVzdA."), "{c}");
        assert_eq!(c.split_once('.').expect("dot").1.len(), 22);
    }
}
