//! Web Push to browsers: the message encrypted to the subscription's keys (RFC 8291, the
//! `aes128gcm` content coding of RFC 8188, one record) and the sender identified by a VAPID
//! token (RFC 8292, an ES256 JWT). Pure: keys and bytes in, bytes out; the send is `push.rs`'s.
//!
//! A subscription is the endpoint URL (the destination's address) and the browser's `p256dh`
//! public key and `auth` secret (the destination's secret, `<p256dh>.<auth>`, base64url).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use p256::ecdsa::signature::Signer;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::{PublicKey, SecretKey};
use sha2::Sha256;

/// The record size announced in the header: the whole message fits in one record.
const RECORD_SIZE: u32 = 4096;
/// Salt (16), record size (4), key id length (1), the sender's public key (65).
pub const HEADER_LEN: usize = 86;
const TAG_LEN: usize = 16;
/// The most a push service must accept (RFC 8030 §7.2: 4096 bytes of payload).
pub const MAX_BODY: usize = 4096;
/// The most plaintext that fits: the body less the header, the tag and the delimiter.
pub const MAX_PLAINTEXT: usize = MAX_BODY - HEADER_LEN - TAG_LEN - 1;

/// `[delivery.web_push]`: the server's VAPID identity. Without a key the push channel still
/// serves ntfy and UnifiedPush; Web Push destinations fail with a message saying so.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebPushConfig {
    /// The VAPID private key: 32 bytes, base64url (`tocsin vapid-key` makes one; `tocsin up`
    /// keeps one in its data directory). Give it through
    /// `TOCSIN_DELIVERY__WEB_PUSH__VAPID_PRIVATE_KEY`. Changing it ends every browser's
    /// subscription: they subscribe again in the web app.
    pub vapid_private_key: String,
    /// How push services reach the operator: `mailto:ops@example.org` or an `https:` URL.
    pub subject: String,
}

impl WebPushConfig {
    /// The identity, if a key is configured; what is wrong with it otherwise.
    pub fn vapid(&self) -> Result<Option<Vapid>, String> {
        if self.vapid_private_key.is_empty() {
            return Ok(None);
        }
        Vapid::new(&self.vapid_private_key, &self.subject)
            .map(Some)
            .map_err(|e| format!("delivery.web_push: {e}"))
    }
}

/// What the API reads to give browsers the key to subscribe with (KV `keys`, key `vapid`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PublishedKey {
    pub public_key: String,
}

/// What is wrong with a subscription or a key, for the person who set it up.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct WebPushError(pub String);

fn err(s: impl Into<String>) -> WebPushError {
    WebPushError(s.into())
}

/// A browser's subscription keys: its P-256 public key and its 16-byte auth secret.
pub struct Subscription {
    pub p256dh: PublicKey,
    pub auth: [u8; 16],
}

impl Subscription {
    /// The keys as a destination keeps them: `<p256dh>.<auth>`, each base64url.
    pub fn parse(secret: &str) -> Result<Subscription, WebPushError> {
        let (key, auth) = secret
            .split_once('.')
            .ok_or_else(|| err("the subscription keys must be <p256dh>.<auth> (base64url)"))?;
        let key = B64
            .decode(key.trim_end_matches('='))
            .map_err(|_| err("p256dh is not base64url"))?;
        let p256dh = PublicKey::from_sec1_bytes(&key)
            .map_err(|_| err("p256dh is not a P-256 public key (65 bytes, uncompressed)"))?;
        let auth: [u8; 16] = B64
            .decode(auth.trim_end_matches('='))
            .ok()
            .and_then(|a| a.try_into().ok())
            .ok_or_else(|| err("auth must be 16 bytes, base64url"))?;
        Ok(Subscription { p256dh, auth })
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("hmac takes any key length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// Encrypt `plaintext` (at most [`MAX_PLAINTEXT`] bytes) to `to`, with a fresh sender key and
/// salt: the body of the push message.
pub fn encrypt(to: &Subscription, plaintext: &[u8]) -> Result<Vec<u8>, WebPushError> {
    let sender = random_key();
    let mut salt = [0u8; 16];
    rand::fill(&mut salt);
    encrypt_with(to, plaintext, &sender, salt)
}

/// [`encrypt`] with the sender key and salt given (RFC 8291's example uses fixed ones).
fn encrypt_with(
    to: &Subscription,
    plaintext: &[u8],
    sender: &SecretKey,
    salt: [u8; 16],
) -> Result<Vec<u8>, WebPushError> {
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(err(format!(
            "the message is {} bytes; a push message carries at most {MAX_PLAINTEXT}",
            plaintext.len()
        )));
    }
    let ua_public = to.p256dh.to_encoded_point(false);
    let as_public = sender.public_key().to_encoded_point(false);
    let shared = p256::ecdh::diffie_hellman(sender.to_nonzero_scalar(), to.p256dh.as_affine());
    // RFC 8291 §3.3: IKM from the ECDH secret and the auth secret, bound to both public keys
    let prk_key = hmac(&to.auth, &[shared.raw_secret_bytes().as_slice()]);
    let ikm = hmac(
        &prk_key,
        &[
            b"WebPush: info\0",
            ua_public.as_bytes(),
            as_public.as_bytes(),
            &[1],
        ],
    );
    // RFC 8188 §2.2: the content key and nonce from the salt
    let prk = hmac(&salt, &[&ikm]);
    let cek = hmac(&prk, &[b"Content-Encoding: aes128gcm\0", &[1]]);
    let nonce = hmac(&prk, &[b"Content-Encoding: nonce\0", &[1]]);
    let key = ring::aead::LessSafeKey::new(
        ring::aead::UnboundKey::new(&ring::aead::AES_128_GCM, &cek[..16])
            .map_err(|_| err("AES-128-GCM key"))?,
    );
    let nonce = ring::aead::Nonce::try_assume_unique_for_key(&nonce[..12])
        .map_err(|_| err("AES-GCM nonce"))?;
    // one record, the last: the plaintext then the delimiter 2
    let mut record = Vec::with_capacity(plaintext.len() + 1 + TAG_LEN);
    record.extend_from_slice(plaintext);
    record.push(2);
    key.seal_in_place_append_tag(nonce, ring::aead::Aad::empty(), &mut record)
        .map_err(|_| err("AES-GCM sealing failed"))?;
    let mut body = Vec::with_capacity(HEADER_LEN + record.len());
    body.extend_from_slice(&salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(65);
    body.extend_from_slice(as_public.as_bytes());
    body.extend_from_slice(&record);
    Ok(body)
}

fn random_key() -> SecretKey {
    loop {
        let mut bytes = [0u8; 32];
        rand::fill(&mut bytes);
        // all but a 2^-128 fraction of 32-byte strings are valid scalars
        if let Ok(k) = SecretKey::from_slice(&bytes) {
            return k;
        }
    }
}

/// The application server's VAPID key pair (RFC 8292): browsers subscribe with its public
/// key, and each push is signed with it, so a push service takes pushes for a subscription
/// only from the server it was made for.
#[derive(Clone)]
pub struct Vapid {
    key: p256::ecdsa::SigningKey,
    /// `mailto:` or `https:` contact for push services.
    subject: String,
}

impl Vapid {
    /// From the private key as configured: 32 bytes, base64url.
    pub fn new(private_key: &str, subject: &str) -> Result<Vapid, WebPushError> {
        let bytes = B64
            .decode(private_key.trim().trim_end_matches('='))
            .map_err(|_| err("the VAPID private key is not base64url"))?;
        let secret = SecretKey::from_slice(&bytes)
            .map_err(|_| err("the VAPID private key is not a P-256 private key (32 bytes)"))?;
        if !(subject.starts_with("mailto:") || subject.starts_with("https://")) {
            return Err(err(
                "the VAPID subject must be a mailto: or https: URL push services can reach you at",
            ));
        }
        Ok(Vapid {
            key: p256::ecdsa::SigningKey::from(secret),
            subject: subject.to_owned(),
        })
    }

    /// A new private key, base64url (`tocsin up` makes one on its first run).
    pub fn generate() -> String {
        B64.encode(random_key().to_bytes())
    }

    /// The public key browsers subscribe with (`applicationServerKey`): 65 bytes, base64url.
    pub fn public_key(&self) -> String {
        B64.encode(self.key.verifying_key().to_encoded_point(false).as_bytes())
    }

    /// The `Authorization` header for a push to `endpoint`, valid for 12 hours from `now_secs`.
    pub fn authorization(&self, endpoint: &str, now_secs: u64) -> Result<String, WebPushError> {
        let u = url::Url::parse(endpoint).map_err(|e| err(format!("endpoint: {e}")))?;
        let audience = u.origin().ascii_serialization();
        let header = B64.encode(br#"{"typ":"JWT","alg":"ES256"}"#);
        let claims = B64.encode(
            serde_json::json!({"aud": audience, "exp": now_secs + 12 * 3600, "sub": self.subject})
                .to_string(),
        );
        let signing_input = format!("{header}.{claims}");
        let signature: p256::ecdsa::Signature = self.key.sign(signing_input.as_bytes());
        Ok(format!(
            "vapid t={signing_input}.{}, k={}",
            B64.encode(signature.to_bytes()),
            self.public_key()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Verifier;

    fn b(s: &str) -> Vec<u8> {
        B64.decode(s).unwrap()
    }

    /// RFC 8291, Appendix A: the same keys, salt and message give the same bytes.
    #[test]
    fn the_rfc_8291_example_encrypts_to_its_published_bytes() {
        let to = Subscription::parse(
            "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4.BTBZMqHH6r4Tts7J_aSIgg",
        )
        .unwrap();
        let sender =
            SecretKey::from_slice(&b("yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw")).unwrap();
        let salt: [u8; 16] = b("DGv6ra1nlYgDCS1FRnbzlw").try_into().unwrap();
        let body = encrypt_with(
            &to,
            b"When I grow up, I want to be a watermelon",
            &sender,
            salt,
        )
        .unwrap();
        assert_eq!(
            B64.encode(body),
            "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
        );
    }

    #[test]
    fn each_message_has_its_own_key_and_salt_and_size_is_bounded() {
        let ua = random_key();
        let to = Subscription {
            p256dh: ua.public_key(),
            auth: [7; 16],
        };
        let a = encrypt(&to, b"x").unwrap();
        let b = encrypt(&to, b"x").unwrap();
        assert_ne!(a[..HEADER_LEN], b[..HEADER_LEN]);
        assert_eq!(a.len(), HEADER_LEN + 1 + 1 + TAG_LEN);
        assert_eq!(encrypt(&to, &[0; MAX_PLAINTEXT]).unwrap().len(), MAX_BODY);
        assert!(encrypt(&to, &[0; MAX_PLAINTEXT + 1]).is_err());
    }

    #[test]
    fn bad_subscription_keys_are_named() {
        for (bad, what) in [
            ("nodot", "<p256dh>.<auth>"),
            ("!!!.BTBZMqHH6r4Tts7J_aSIgg", "p256dh is not base64url"),
            ("AAAA.BTBZMqHH6r4Tts7J_aSIgg", "not a P-256 public key"),
            (
                "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4.AAAA",
                "auth must be 16 bytes",
            ),
        ] {
            let e = Subscription::parse(bad).err().unwrap();
            assert!(e.0.contains(what), "{bad}: {e}");
        }
    }

    /// The token is a JWT (RFC 7519) signed ES256 for the endpoint's origin, verifiable with
    /// the public key in `k=`.
    #[test]
    fn a_vapid_token_names_the_push_service_and_verifies() {
        let v = Vapid::new(&Vapid::generate(), "mailto:ops@example.org").unwrap();
        let h = v
            .authorization("https://push.example.net/wpush/v2/abc?x=1", 1_000)
            .unwrap();
        let (t, k) = h
            .strip_prefix("vapid t=")
            .unwrap()
            .split_once(", k=")
            .unwrap();
        assert_eq!(k, v.public_key());
        let (input, sig) = t.rsplit_once('.').unwrap();
        let claims: serde_json::Value =
            serde_json::from_slice(&b(input.split_once('.').unwrap().1)).unwrap();
        assert_eq!(claims["aud"], "https://push.example.net");
        assert_eq!(claims["exp"], 1_000 + 12 * 3600);
        assert_eq!(claims["sub"], "mailto:ops@example.org");
        let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&b(k)).unwrap();
        let sig = p256::ecdsa::Signature::from_slice(&b(sig)).unwrap();
        key.verify(input.as_bytes(), &sig).unwrap();
        assert!(Vapid::new("short", "mailto:a@b").is_err());
        assert!(Vapid::new(&Vapid::generate(), "ops@example.org").is_err());
    }
}
