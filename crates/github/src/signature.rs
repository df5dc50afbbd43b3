//! Webhook signatures: `X-Hub-Signature-256` checked over the raw body with the
//! shared secret (HMAC-SHA256, compared in constant time). Pure: bytes in, a
//! verdict out; it never parses the body, which must not be trusted before this.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The header GitHub puts the signature in.
pub const SIGNATURE_HEADER: &str = "X-Hub-Signature-256";

const PREFIX: &str = "sha256=";
const DIGEST_LEN: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error(
        "the webhook secret is empty; set one in GitHub and here, or anyone can sign a delivery"
    )]
    EmptySecret,
    #[error("no {SIGNATURE_HEADER} header; set a secret on the webhook in GitHub")]
    MissingHeader,
    #[error(
        "the {SIGNATURE_HEADER} header is malformed ({0}); expected \"sha256=\" and 64 hex digits"
    )]
    MalformedHeader(&'static str),
    #[error("the {SIGNATURE_HEADER} header does not match the body; check that both sides use the same secret")]
    Mismatch,
}

/// Check `header` (the value of `X-Hub-Signature-256`, if any) against `body`.
pub fn verify(secret: &[u8], body: &[u8], header: Option<&str>) -> Result<(), SignatureError> {
    let mut v = Verifier::new(secret, header)?;
    v.update(body);
    v.finish()
}

/// [`verify`] over a body that arrives in pieces: the header is checked before
/// any byte is read (a delivery without a well-formed signature is refused
/// without reading its body), then each piece is hashed as it arrives, so
/// nothing but the digest is kept to decide.
pub struct Verifier {
    mac: HmacSha256,
    expected: [u8; DIGEST_LEN],
}

impl Verifier {
    pub fn new(secret: &[u8], header: Option<&str>) -> Result<Verifier, SignatureError> {
        if secret.is_empty() {
            return Err(SignatureError::EmptySecret);
        }
        let header = header.ok_or(SignatureError::MissingHeader)?;
        let hex = header
            .strip_prefix(PREFIX)
            .ok_or(SignatureError::MalformedHeader("no \"sha256=\" prefix"))?;
        let expected = decode_hex(hex)?;
        Ok(Verifier {
            mac: mac(secret, b""),
            expected,
        })
    }

    pub fn update(&mut self, piece: &[u8]) {
        self.mac.update(piece);
    }

    /// Compared in constant time.
    pub fn finish(self) -> Result<(), SignatureError> {
        self.mac
            .verify_slice(&self.expected)
            .map_err(|_| SignatureError::Mismatch)
    }
}

/// The header value GitHub would send for `body` signed with `secret` (for tests
/// and for tools that replay deliveries).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let digest = mac(secret, body).finalize().into_bytes();
    let mut out = String::with_capacity(PREFIX.len() + 2 * DIGEST_LEN);
    out.push_str(PREFIX);
    for byte in digest.iter() {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

fn mac(secret: &[u8], body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length (long ones are hashed first), so this cannot fail.
    let mut mac =
        <HmacSha256 as KeyInit>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(body);
    mac
}

fn decode_hex(hex: &str) -> Result<[u8; DIGEST_LEN], SignatureError> {
    let digits = hex.as_bytes();
    if digits.len() != 2 * DIGEST_LEN {
        return Err(SignatureError::MalformedHeader("not 64 hex digits"));
    }
    let mut out = [0u8; DIGEST_LEN];
    for (slot, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *slot = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Ok(out)
}

fn nibble(digit: u8) -> Result<u8, SignatureError> {
    match digit {
        b'0'..=b'9' => Ok(digit - b'0'),
        b'a'..=b'f' => Ok(digit - b'a' + 10),
        b'A'..=b'F' => Ok(digit - b'A' + 10),
        _ => Err(SignatureError::MalformedHeader(
            "a character that is not a hex digit",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // GitHub's documented test vector ("Validating webhook deliveries").
    const SECRET: &[u8] = b"It's a Secret to Everybody";
    const BODY: &[u8] = b"Hello, World!";
    const HEADER: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn githubs_documented_vector_verifies() {
        assert_eq!(verify(SECRET, BODY, Some(HEADER)), Ok(()));
        assert_eq!(sign(SECRET, BODY), HEADER);
    }

    #[test]
    fn pieces_verify_as_the_whole() {
        for split in 0..=BODY.len() {
            let mut v = Verifier::new(SECRET, Some(HEADER)).unwrap();
            v.update(&BODY[..split]);
            v.update(&BODY[split..]);
            assert_eq!(v.finish(), Ok(()), "split at {split}");
        }
        let mut v = Verifier::new(SECRET, Some(HEADER)).unwrap();
        v.update(b"Hello, World?");
        assert_eq!(v.finish(), Err(SignatureError::Mismatch));
        assert_eq!(
            Verifier::new(SECRET, None).err(),
            Some(SignatureError::MissingHeader)
        );
    }

    #[test]
    fn upper_case_hex_is_accepted() {
        let upper = format!("sha256={}", HEADER[7..].to_ascii_uppercase());
        assert_eq!(verify(SECRET, BODY, Some(&upper)), Ok(()));
    }

    #[test]
    fn a_changed_body_or_secret_is_a_mismatch() {
        assert_eq!(
            verify(SECRET, b"Hello, World?", Some(HEADER)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"another secret", BODY, Some(HEADER)),
            Err(SignatureError::Mismatch)
        );
        let mut flipped = HEADER.to_string();
        flipped.replace_range(HEADER.len() - 1.., "f");
        assert_eq!(
            verify(SECRET, BODY, Some(&flipped)),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn missing_and_malformed_headers_are_told_apart() {
        assert_eq!(
            verify(SECRET, BODY, None),
            Err(SignatureError::MissingHeader)
        );
        for bad in [
            "",
            "sha1=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            "sha256=",
            "sha256=757107ea",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e1",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17 ",
            "sha256=zz7107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043eé",
        ] {
            assert!(
                matches!(
                    verify(SECRET, BODY, Some(bad)),
                    Err(SignatureError::MalformedHeader(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn an_empty_secret_is_refused() {
        let header = sign(b"", BODY);
        assert_eq!(
            verify(b"", BODY, Some(&header)),
            Err(SignatureError::EmptySecret)
        );
    }
}
