//! The JSON Web Tokens a user pool issues (RFC 7519, signed RS256 as RFC 7518 §3.3 describes)
//! and the JSON Web Key Set that publishes the keys to check them (RFC 7517), as the Amazon
//! Cognito Developer Guide ("Understanding user pool JSON web tokens", "Verifying a JSON web
//! token") describes them.
//!
//! Each pool has its own 2048-bit RSA key, made when the pool is created and kept (PKCS#8) with
//! the pool's record, so tokens stay valid across a restart.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{self, KeyPair, RsaKeyPair};
use serde_json::{Value, json};

/// A pool's signing key.
#[derive(Debug)]
pub struct SigningKey {
    /// The key id (`kid`) tokens name and the JWKS lists.
    pub kid: String,
    pair: RsaKeyPair,
}

/// Makes a new 2048-bit RSA key: its PKCS#8 DER.
pub fn generate_pkcs8() -> Result<Vec<u8>, String> {
    use rsa::pkcs8::EncodePrivateKey;
    let mut rng = rsa::rand_core::OsRng;
    let key = rsa::RsaPrivateKey::new(&mut rng, 2048).map_err(|e| format!("making an RSA key: {e}"))?;
    let der = key.to_pkcs8_der().map_err(|e| format!("encoding the RSA key: {e}"))?;
    Ok(der.as_bytes().to_vec())
}

impl SigningKey {
    /// The key kept as PKCS#8 DER, under `kid`.
    pub fn from_pkcs8(kid: &str, der: &[u8]) -> Result<Self, String> {
        let pair = RsaKeyPair::from_pkcs8(der).map_err(|e| format!("the pool's signing key is unusable: {e}"))?;
        Ok(SigningKey { kid: kid.to_owned(), pair })
    }

    /// The public key as a JWK (`{kid, alg, kty, e, n, use}`, as Cognito's JWKS lists it).
    pub fn jwk(&self) -> Value {
        let public = signature::RsaPublicKeyComponents::<Vec<u8>>::from(self.pair.public());
        json!({
            "alg": "RS256",
            "e": URL_SAFE_NO_PAD.encode(&public.e),
            "kid": self.kid,
            "kty": "RSA",
            "n": URL_SAFE_NO_PAD.encode(&public.n),
            "use": "sig",
        })
    }

    /// `claims` signed: `header.payload.signature`, each base64url without padding.
    pub fn sign(&self, claims: &Value) -> Result<String, String> {
        let header = json!({"kid": self.kid, "alg": "RS256"});
        let signing_input =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let mut signature = vec![0; self.pair.public().modulus_len()];
        self.pair
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| "signing the token failed".to_owned())?;
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }

    /// The claims of `token` if this key signed it (RS256 only); any other token is an error.
    pub fn verify(&self, token: &str) -> Result<Value, String> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("not a JSON Web Token (three dot-separated parts)".into());
        };
        let header: Value = decode_json(header).ok_or("the token's header is not base64url JSON")?;
        if header["alg"] != "RS256" || header["kid"] != self.kid.as_str() {
            return Err("the token is not signed RS256 by this pool's key".into());
        }
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| "the token's signature is not base64url")?;
        let public = signature::UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, self.pair.public_key());
        let signed = &token[..header_and_payload_len(token)];
        public.verify(signed.as_bytes(), &signature).map_err(|_| "the token's signature does not verify")?;
        decode_json(payload).ok_or_else(|| "the token's payload is not base64url JSON".into())
    }
}

fn header_and_payload_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(token.len())
}

fn decode_json(part: &str) -> Option<Value> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The `kid` in a token's header, if it has one (to find the key that should check it).
pub fn kid_of(token: &str) -> Option<String> {
    let header = decode_json(token.split('.').next()?)?;
    header["kid"].as_str().map(str::to_owned)
}

/// The claims of a token without checking anything (for the pool id in `iss`).
pub fn unverified_claims(token: &str) -> Option<Value> {
    decode_json(token.split('.').nth(1)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    fn key() -> &'static SigningKey {
        static KEY: OnceLock<SigningKey> = OnceLock::new();
        KEY.get_or_init(|| SigningKey::from_pkcs8("kid-1", &generate_pkcs8().unwrap()).unwrap())
    }

    #[test]
    fn a_signed_token_verifies_and_carries_its_claims() {
        let claims = json!({"sub": "u", "token_use": "id"});
        let token = key().sign(&claims).unwrap();
        assert_eq!(key().verify(&token).unwrap(), claims);
        assert_eq!(kid_of(&token).as_deref(), Some("kid-1"));
        let jwk = key().jwk();
        assert_eq!(
            (jwk["kty"].as_str(), jwk["alg"].as_str(), jwk["e"].as_str()),
            (Some("RSA"), Some("RS256"), Some("AQAB"))
        );
    }

    #[test]
    fn altered_or_foreign_tokens_do_not_verify() {
        let token = key().sign(&json!({"sub": "u", "token_use": "id"})).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let forged_payload = URL_SAFE_NO_PAD.encode(json!({"sub": "admin", "token_use": "id"}).to_string());
        let forged = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
        assert!(key().verify(&forged).unwrap_err().contains("does not verify"));
        let unsigned = format!("{}.{}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"kid-1"}"#), parts[1]);
        assert!(key().verify(&unsigned).is_err());
        assert!(key().verify("not-a-token").is_err());
        assert!(key().verify("a.b.c.d").is_err());
    }
}
