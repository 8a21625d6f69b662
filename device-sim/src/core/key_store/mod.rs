//! Where the core device's private keys live, and the one way the rest of the core uses them.
//!
//! Two stores, as the Greengrass nucleus has them (developer guide, "Hardware security
//! integration"; the `aws.greengrass.crypto.Pkcs11Provider` component):
//! - **files** ([`KeyStore::files`]): an EC P-256 key as PKCS#8 PEM, mode 0600, in a 0700
//!   directory, written to a temporary file, synced and renamed into place;
//! - **a PKCS#11 token** ([`KeyStore::open`], configured with the provider's keys `name`,
//!   `library`, `slot`, `userPin` — [`Pkcs11Config`]): the key pair is generated in the token
//!   (`CKA_TOKEN`, `CKA_SENSITIVE`, not `CKA_EXTRACTABLE`, labelled) and never leaves it; TLS
//!   and CSRs are signed by the token (`C_Sign` with `CKM_ECDSA` over a SHA-256 digest).
//!
//! A key is named as the nucleus's `privateKeyPath` names it ([`KeyRef`]): a file path, or an
//! RFC 7512 URI `pkcs11:object=LABEL;type=private`. What a caller holds is a [`DeviceKey`]: it
//! presents itself for TLS client authentication ([`DeviceKey::signing_key`], used by
//! [`super::bridge::device_tls_config`]) and signs CSRs ([`DeviceKey::csr`]). Onboarding by claim
//! generates the core's key here; the certificate rotator uses the same four operations:
//! [`KeyStore::generate`], [`DeviceKey::csr`], [`DeviceKey::signing_key`], [`KeyStore::delete`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cryptoki::context::{CInitializeArgs, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use rustls::SignatureScheme;
use serde::Deserialize;

pub mod softhsm;

/// DER of the OID of the curve every key here uses: prime256v1 (secp256r1, NIST P-256).
const P256_OID_DER: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// The `aws.greengrass.crypto.Pkcs11Provider` component's configuration.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Pkcs11Config {
    /// A name for this configuration (the provider's `name`; used in messages).
    pub name: String,
    /// The PKCS#11 library (absolute path to the `.so`).
    pub library: PathBuf,
    /// The slot's id (not its index, not its label).
    pub slot: u64,
    /// The user PIN (a YAML number such as `1234` is taken as its digits).
    #[serde(deserialize_with = "pin")]
    pub user_pin: String,
}

fn pin<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    match serde_json::Value::deserialize(deserializer)? {
        serde_json::Value::String(s) => Ok(s),
        serde_json::Value::Number(n) if n.is_u64() => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!("userPin must be a string, not {other}"))),
    }
}

impl std::fmt::Debug for Pkcs11Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Config")
            .field("name", &self.name)
            .field("library", &self.library)
            .field("slot", &self.slot)
            .field("user_pin", &"<redacted>")
            .finish()
    }
}

impl Pkcs11Config {
    /// Reads the provider's configuration from a JSON or YAML file.
    pub fn from_file(path: &Path) -> Result<Self, KeyStoreError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| KeyStoreError::Config(format!("cannot read {}: {e}", path.display())))?;
        let value: serde_json::Value = serde_yaml_ng::from_str(&text)
            .map_err(|e| KeyStoreError::Config(format!("{} is not JSON or YAML: {e}", path.display())))?;
        serde_json::from_value(value).map_err(|e| KeyStoreError::Config(format!("{}: {e}", path.display())))
    }
}

/// Why a key could not be made, found or used, sorted by what to do next.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    /// A configuration value is wrong (a file that does not parse, a key reference that is not
    /// a path or a supported `pkcs11:` URI): fix it.
    #[error("{0}")]
    Config(String),
    /// The PKCS#11 library cannot be loaded or initialised: install it or fix `library`.
    #[error("PKCS#11 provider {name}: cannot load the library {library}: {cause}")]
    Library {
        /// The provider's `name`.
        name: String,
        /// The library's path.
        library: PathBuf,
        /// What the loader said.
        cause: String,
    },
    /// No token in the configured slot: fix `slot`.
    #[error("PKCS#11 provider {name}: no token in slot {slot} (slots with a token: {available:?})")]
    NoSlot {
        /// The provider's `name`.
        name: String,
        /// The configured slot id.
        slot: u64,
        /// The slot ids that hold a token.
        available: Vec<u64>,
    },
    /// The token refused the user PIN: fix `userPin` (a token may lock after a few tries).
    #[error("PKCS#11 provider {name}: the token in slot {slot} refused the user PIN ({cause})")]
    WrongPin {
        /// The provider's `name`.
        name: String,
        /// The slot id.
        slot: u64,
        /// The token's return value.
        cause: String,
    },
    /// No private key has this label: fix the key's `object=`, or onboard again.
    #[error("no private key labelled {0:?} in the token")]
    NoSuchKey(String),
    /// A key of this name exists already: pick another name, or delete it first.
    #[error("the private key {0:?} exists already")]
    KeyExists(String),
    /// The key names a token but no PKCS#11 provider is configured.
    #[error("{0} is a key in a PKCS#11 token, but no PKCS#11 provider is configured (--pkcs11)")]
    NoToken(String),
    /// A key file is missing, unreadable or not a key; or cannot be written.
    #[error("private key {path}: {cause}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        cause: String,
    },
    /// The token failed an operation it should be able to do: retry, or check the token.
    #[error("PKCS#11 {operation}: {cause}")]
    Token {
        /// What was asked of the token.
        operation: &'static str,
        /// The token's return value.
        cause: String,
    },
}

impl KeyStoreError {
    /// True when retrying cannot help.
    pub fn is_configuration(&self) -> bool {
        !matches!(self, KeyStoreError::Token { .. })
    }

    fn token(operation: &'static str) -> impl FnOnce(CkError) -> Self {
        move |e| KeyStoreError::Token { operation, cause: e.to_string() }
    }
}

/// A key as the nucleus's `privateKeyPath` names it: a PEM file, or a key in the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRef {
    /// A PEM file (PKCS#8, SEC1 or PKCS#1).
    File(PathBuf),
    /// The private key object with this `CKA_LABEL` (`pkcs11:object=LABEL;type=private`).
    Token {
        /// The label.
        label: String,
    },
}

impl KeyRef {
    /// Reads a `privateKeyPath`: an RFC 7512 `pkcs11:` URI (path attributes `object`, required,
    /// and `type`, which must be `private` when given; values percent-encoded), else a path.
    pub fn parse(text: &str) -> Result<Self, KeyStoreError> {
        let Some(rest) = text.strip_prefix("pkcs11:") else { return Ok(KeyRef::File(PathBuf::from(text))) };
        let bad = |why: String| KeyStoreError::Config(format!("{text:?} is not a usable pkcs11: URI: {why}"));
        if rest.contains('?') {
            return Err(bad("query attributes (such as pin-value) are not taken; the PIN is userPin".into()));
        }
        let mut label = None;
        for attribute in rest.split(';').filter(|a| !a.is_empty()) {
            let (name, value) = attribute.split_once('=').ok_or_else(|| bad(format!("{attribute:?} has no '='")))?;
            let value = percent_decode(value).map_err(bad)?;
            match name {
                "object" => label = Some(value),
                "type" if value == "private" => {}
                "type" => return Err(bad(format!("type={value}: the core's key is type=private"))),
                other => return Err(bad(format!("the attribute {other:?} is not supported (object, type)"))),
            }
        }
        match label {
            Some(label) if !label.is_empty() => Ok(KeyRef::Token { label }),
            _ => Err(bad("object=LABEL is missing".into())),
        }
    }

    /// The reference from a path as stored in `identity.json` or given to `--key`.
    pub fn from_path(path: &Path) -> Result<Self, KeyStoreError> {
        match path.to_str() {
            Some(text) => Self::parse(text),
            None => Ok(KeyRef::File(path.to_owned())),
        }
    }

    /// The `privateKeyPath` form: the path, or `pkcs11:object=LABEL;type=private`.
    pub fn to_path(&self) -> PathBuf {
        match self {
            KeyRef::File(path) => path.clone(),
            KeyRef::Token { label } => PathBuf::from(format!("pkcs11:object={};type=private", percent_encode(label))),
        }
    }
}

fn percent_decode(value: &str) -> Result<String, String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value.get(i + 1..i + 3).ok_or_else(|| format!("a truncated escape in {value:?}"))?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("a bad escape %{hex} in {value:?}"))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{value:?} is not UTF-8"))
}

fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Where new keys are made: a directory, or a PKCS#11 token. Cheap to clone.
#[derive(Debug, Clone)]
pub enum KeyStore {
    /// Keys as 0600 files in this 0700 directory.
    Files(PathBuf),
    /// Keys in a token.
    Token(Arc<Token>),
}

/// A key the core can use: it presents itself for TLS and signs CSRs. Cheap to clone.
#[derive(Debug, Clone)]
pub enum DeviceKey {
    /// A PEM file.
    File(PathBuf),
    /// A key in a token.
    Token(Arc<TokenKey>),
}

impl KeyStore {
    /// A store of key files in `dir` (created 0700 when the first key is made).
    pub fn files(dir: impl Into<PathBuf>) -> Self {
        KeyStore::Files(dir.into())
    }

    /// The token of a PKCS#11 provider: the library loaded and initialised, the slot found, the
    /// user logged in. A process opens a provider once and shares the store.
    pub fn open(config: &Pkcs11Config) -> Result<Self, KeyStoreError> {
        Ok(KeyStore::Token(Arc::new(Token::open(config)?)))
    }

    /// The key a [`KeyStore::generate`] of `label` makes: `{dir}/{label}.key`, or the token key
    /// labelled `label`.
    pub fn named(&self, label: &str) -> KeyRef {
        match self {
            KeyStore::Files(dir) => KeyRef::File(key_file(dir, label)),
            KeyStore::Token(_) => KeyRef::Token { label: label.to_owned() },
        }
    }

    /// A new EC P-256 key named `label` ([`KeyStore::named`]). A key of that name is never
    /// replaced ([`KeyStoreError::KeyExists`]): delete it first.
    pub fn generate(&self, label: &str) -> Result<DeviceKey, KeyStoreError> {
        match self {
            KeyStore::Files(dir) => {
                let path = key_file(dir, label);
                if path.exists() {
                    return Err(KeyStoreError::KeyExists(path.display().to_string()));
                }
                let file_error = |cause: String| KeyStoreError::File { path: path.clone(), cause };
                let key = rcgen::KeyPair::generate().map_err(|e| file_error(format!("cannot make a key: {e}")))?;
                write_private(&path, key.serialize_pem().as_bytes()).map_err(|e| file_error(e.to_string()))?;
                Ok(DeviceKey::File(path))
            }
            KeyStore::Token(token) => Ok(DeviceKey::Token(Arc::new(token.generate(label)?))),
        }
    }

    /// The key `key` names, checked to exist. A file is used with either store; a token key
    /// needs this store to be a token.
    pub fn key(&self, key: &KeyRef) -> Result<DeviceKey, KeyStoreError> {
        match (key, self) {
            (KeyRef::File(path), _) => {
                if !path.is_file() {
                    return Err(KeyStoreError::File { path: path.clone(), cause: "no such file".into() });
                }
                Ok(DeviceKey::File(path.clone()))
            }
            (KeyRef::Token { label }, KeyStore::Token(token)) => Ok(DeviceKey::Token(Arc::new(token.find(label)?))),
            (KeyRef::Token { .. }, KeyStore::Files(_)) => {
                Err(KeyStoreError::NoToken(key.to_path().display().to_string()))
            }
        }
    }

    /// Deletes a key (the file, or the token's key pair). A key already gone is not an error.
    pub fn delete(&self, key: &KeyRef) -> Result<(), KeyStoreError> {
        match (key, self) {
            (KeyRef::File(path), _) => match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(KeyStoreError::File { path: path.clone(), cause: format!("cannot delete: {e}") })
                }
                _ => Ok(()),
            },
            (KeyRef::Token { label }, KeyStore::Token(token)) => token.delete(label),
            (KeyRef::Token { .. }, KeyStore::Files(_)) => {
                Err(KeyStoreError::NoToken(key.to_path().display().to_string()))
            }
        }
    }
}

impl DeviceKey {
    /// The key's `privateKeyPath`.
    pub fn key_ref(&self) -> KeyRef {
        match self {
            DeviceKey::File(path) => KeyRef::File(path.clone()),
            DeviceKey::Token(key) => KeyRef::Token { label: key.label.clone() },
        }
    }

    /// The key as rustls presents it for client authentication: a file key through the ring
    /// provider, a token key signing through the token.
    pub fn signing_key(&self) -> Result<Arc<dyn rustls::sign::SigningKey>, KeyStoreError> {
        match self {
            DeviceKey::File(path) => {
                let file_error = |cause: String| KeyStoreError::File { path: path.clone(), cause };
                let pem = std::fs::read(path).map_err(|e| file_error(format!("cannot read it: {e}")))?;
                let der = rustls_pemfile::private_key(&mut pem.as_slice())
                    .map_err(|e| file_error(format!("bad PEM: {e}")))?
                    .ok_or_else(|| file_error("no private key in it".into()))?;
                rustls::crypto::ring::default_provider()
                    .key_provider
                    .load_private_key(der)
                    .map_err(|e| file_error(format!("not a usable key: {e}")))
            }
            DeviceKey::Token(key) => Ok(Arc::new(TlsKey(key.clone()))),
        }
    }

    /// A PKCS#10 CSR (PEM) with subject `CN=common_name`, signed by this key.
    pub fn csr(&self, common_name: &str) -> Result<String, KeyStoreError> {
        let fail = |e: rcgen::Error| KeyStoreError::Config(format!("cannot make a CSR: {e}"));
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
        params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
        let request = match self {
            DeviceKey::File(path) => {
                let pem = std::fs::read_to_string(path)
                    .map_err(|e| KeyStoreError::File { path: path.clone(), cause: format!("cannot read it: {e}") })?;
                let key = rcgen::KeyPair::from_pem(&pem)
                    .map_err(|e| KeyStoreError::File { path: path.clone(), cause: format!("not a usable key: {e}") })?;
                params.serialize_request(&key)
            }
            DeviceKey::Token(key) => params.serialize_request(key.as_ref()),
        };
        request.map_err(fail)?.pem().map_err(fail)
    }
}

/// An open PKCS#11 token: one logged-in session, shared (calls are serialised on it; the
/// login holds for every session of the process).
pub struct Token {
    name: String,
    slot: u64,
    session: Mutex<Session>,
    // Keeps the library loaded and initialised while the token is in use.
    _pkcs11: Pkcs11,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token").field("name", &self.name).field("slot", &self.slot).finish()
    }
}

impl Token {
    fn open(config: &Pkcs11Config) -> Result<Self, KeyStoreError> {
        let name = config.name.clone();
        let library_error =
            |cause: String| KeyStoreError::Library { name: name.clone(), library: config.library.clone(), cause };
        if !config.library.is_file() {
            return Err(library_error("no such file".into()));
        }
        let pkcs11 = Pkcs11::new(&config.library).map_err(|e| library_error(e.to_string()))?;
        match pkcs11.initialize(CInitializeArgs::OsThreads) {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => return Err(library_error(format!("C_Initialize: {e}"))),
        }
        let slots = pkcs11.get_slots_with_token().map_err(KeyStoreError::token("C_GetSlotList"))?;
        let slot = slots.iter().find(|s| s.id() == config.slot).copied().ok_or_else(|| KeyStoreError::NoSlot {
            name: name.clone(),
            slot: config.slot,
            available: slots.iter().map(|s| s.id()).collect(),
        })?;
        let session = pkcs11.open_rw_session(slot).map_err(KeyStoreError::token("C_OpenSession"))?;
        match session.login(UserType::User, Some(&AuthPin::new(config.user_pin.clone()))) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(CkError::Pkcs11(rv @ (RvError::PinIncorrect | RvError::PinLenRange | RvError::PinLocked), _)) => {
                return Err(KeyStoreError::WrongPin { name, slot: config.slot, cause: format!("{rv:?}") });
            }
            Err(e) => return Err(KeyStoreError::token("C_Login")(e)),
        }
        Ok(Self { name, slot: config.slot, session: Mutex::new(session), _pkcs11: pkcs11 })
    }

    fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        self.session.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn objects(&self, class: ObjectClass, label: &str) -> Result<Vec<ObjectHandle>, KeyStoreError> {
        let template = [Attribute::Class(class), Attribute::Label(label.as_bytes().to_vec())];
        self.session().find_objects(&template).map_err(KeyStoreError::token("C_FindObjects"))
    }

    fn generate(self: &Arc<Self>, label: &str) -> Result<TokenKey, KeyStoreError> {
        if !self.objects(ObjectClass::PRIVATE_KEY, label)?.is_empty() {
            return Err(KeyStoreError::KeyExists(label.to_owned()));
        }
        let label_bytes = label.as_bytes().to_vec();
        let public = [
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::EcParams(P256_OID_DER.to_vec()),
            Attribute::Label(label_bytes.clone()),
            Attribute::Id(label_bytes.clone()),
        ];
        let private = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Label(label_bytes.clone()),
            Attribute::Id(label_bytes),
        ];
        let (_, handle) = self
            .session()
            .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
            .map_err(KeyStoreError::token("C_GenerateKeyPair"))?;
        tracing::info!(provider = %self.name, label, "generated a key pair in the token");
        self.key(label, handle)
    }

    fn find(self: &Arc<Self>, label: &str) -> Result<TokenKey, KeyStoreError> {
        match self.objects(ObjectClass::PRIVATE_KEY, label)?.as_slice() {
            [handle] => self.key(label, *handle),
            [] => Err(KeyStoreError::NoSuchKey(label.to_owned())),
            _ => Err(KeyStoreError::Config(format!("more than one private key is labelled {label:?} in the token"))),
        }
    }

    /// The key with its public point (from the public key object of the same label).
    fn key(self: &Arc<Self>, label: &str, handle: ObjectHandle) -> Result<TokenKey, KeyStoreError> {
        let public = self.objects(ObjectClass::PUBLIC_KEY, label)?;
        let Some(public) = public.first() else {
            return Err(KeyStoreError::Config(format!("the token has no public key labelled {label:?}")));
        };
        let attributes = self
            .session()
            .get_attributes(*public, &[AttributeType::KeyType, AttributeType::EcPoint])
            .map_err(KeyStoreError::token("C_GetAttributeValue"))?;
        let mut point = None;
        for attribute in attributes {
            match attribute {
                Attribute::KeyType(t) if t != KeyType::EC => {
                    return Err(KeyStoreError::Config(format!("the key labelled {label:?} is not an EC key")));
                }
                Attribute::EcPoint(p) => point = Some(ec_point(&p)),
                _ => {}
            }
        }
        let point = point
            .filter(|p| p.len() == 65 && p[0] == 0x04)
            .ok_or_else(|| KeyStoreError::Config(format!("the key labelled {label:?} is not a P-256 key")))?;
        Ok(TokenKey { token: self.clone(), label: label.to_owned(), handle, public: point })
    }

    fn delete(&self, label: &str) -> Result<(), KeyStoreError> {
        let mut handles = self.objects(ObjectClass::PRIVATE_KEY, label)?;
        handles.extend(self.objects(ObjectClass::PUBLIC_KEY, label)?);
        let session = self.session();
        for handle in handles {
            session.destroy_object(handle).map_err(KeyStoreError::token("C_DestroyObject"))?;
        }
        Ok(())
    }

    /// Raw r||s of an ECDSA signature over SHA-256(`message`).
    fn sign(&self, handle: ObjectHandle, message: &[u8]) -> Result<Vec<u8>, KeyStoreError> {
        let digest = ring::digest::digest(&ring::digest::SHA256, message);
        self.session().sign(&Mechanism::Ecdsa, handle, digest.as_ref()).map_err(KeyStoreError::token("C_Sign"))
    }

    /// The attributes that say whether a key can leave the token: (`CKA_SENSITIVE`,
    /// `CKA_EXTRACTABLE`, whether `CKA_VALUE` can be read).
    pub fn exposure(&self, key: &TokenKey) -> Result<(bool, bool, bool), KeyStoreError> {
        let session = self.session();
        let mut sensitive = false;
        let mut extractable = true;
        for attribute in session
            .get_attributes(key.handle, &[AttributeType::Sensitive, AttributeType::Extractable])
            .map_err(KeyStoreError::token("C_GetAttributeValue"))?
        {
            match attribute {
                Attribute::Sensitive(s) => sensitive = s,
                Attribute::Extractable(e) => extractable = e,
                _ => {}
            }
        }
        let value = session
            .get_attribute_info(key.handle, &[AttributeType::Value])
            .map_err(KeyStoreError::token("C_GetAttributeValue"))?;
        let readable = matches!(value.first(), Some(cryptoki::object::AttributeInfo::Available(_)));
        Ok((sensitive, extractable, readable))
    }
}

/// `CKA_EC_POINT` is a DER OCTET STRING around the point (some tokens give the bare point).
fn ec_point(value: &[u8]) -> Vec<u8> {
    match value {
        [0x04, len, rest @ ..] if usize::from(*len) == rest.len() => rest.to_vec(),
        _ => value.to_vec(),
    }
}

/// A key pair in a token.
pub struct TokenKey {
    token: Arc<Token>,
    label: String,
    handle: ObjectHandle,
    /// The uncompressed public point (0x04 || x || y).
    public: Vec<u8>,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey").field("token", &self.token).field("label", &self.label).finish()
    }
}

impl TokenKey {
    /// The key's label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The token that holds it.
    pub fn token(&self) -> &Token {
        &self.token
    }

    /// A DER ECDSA-Sig-Value over SHA-256(`message`), as X.509 and TLS carry it.
    fn sign_der(&self, message: &[u8]) -> Result<Vec<u8>, KeyStoreError> {
        let raw = self.token.sign(self.handle, message)?;
        if raw.len() != 64 {
            return Err(KeyStoreError::Token {
                operation: "C_Sign",
                cause: format!("a {}-byte ECDSA signature, not 64", raw.len()),
            });
        }
        Ok(ecdsa_der(&raw))
    }
}

impl rcgen::PublicKeyData for TokenKey {
    fn der_bytes(&self) -> &[u8] {
        &self.public
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for TokenKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.sign_der(msg).map_err(|e| {
            tracing::warn!("signing a CSR in the token: {e}");
            rcgen::Error::RemoteKeyError
        })
    }
}

/// PKCS#11 gives ECDSA signatures as r || s; X.509 and TLS want `SEQUENCE { INTEGER r, INTEGER s }`.
fn ecdsa_der(raw: &[u8]) -> Vec<u8> {
    let (r, s) = raw.split_at(raw.len() / 2);
    let integer = |v: &[u8]| {
        let first = v.iter().position(|&b| b != 0).unwrap_or(v.len().saturating_sub(1));
        let v = &v[first..];
        let pad = v.first().is_some_and(|&b| b & 0x80 != 0);
        let mut out = vec![0x02, (v.len() + usize::from(pad)) as u8];
        if pad {
            out.push(0);
        }
        out.extend_from_slice(v);
        out
    };
    let body = [integer(r), integer(s)].concat();
    let mut out = vec![0x30, body.len() as u8];
    out.extend(body);
    out
}

/// A token key as rustls uses it.
#[derive(Debug)]
struct TlsKey(Arc<TokenKey>);

impl rustls::sign::SigningKey for TlsKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn rustls::sign::Signer>> {
        offered
            .contains(&SignatureScheme::ECDSA_NISTP256_SHA256)
            .then(|| Box::new(TlsSigner(self.0.clone())) as Box<dyn rustls::sign::Signer>)
    }

    fn public_key(&self) -> Option<rustls::pki_types::SubjectPublicKeyInfoDer<'_>> {
        use rcgen::PublicKeyData as _;
        Some(self.0.subject_public_key_info().into())
    }

    fn algorithm(&self) -> rustls::SignatureAlgorithm {
        rustls::SignatureAlgorithm::ECDSA
    }
}

#[derive(Debug)]
struct TlsSigner(Arc<TokenKey>);

impl rustls::sign::Signer for TlsSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.0.sign_der(message).map_err(|e| rustls::Error::General(e.to_string()))
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ECDSA_NISTP256_SHA256
    }
}

/// The file of the key named `label` in `dir`.
fn key_file(dir: &Path, label: &str) -> PathBuf {
    dir.join(format!("{label}.key"))
}

/// Writes a private key: its directory made 0700, the file created 0600, synced, renamed into
/// place.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::softhsm::SoftToken;
    use super::*;

    /// The child process's token: its slot and library (its configuration is `SOFTHSM2_CONF`).
    const TOKEN_ENV: &str = "DEVICE_SIM_TEST_SOFTHSM_TOKEN";

    /// Runs `body` with a SoftHSM2 token of its own. SoftHSM2 reads `SOFTHSM2_CONF` once per
    /// process and the tests of this binary share one, so the test runs again, alone, in a child
    /// process that has the variable set.
    fn with_token(test: &str, body: impl FnOnce(Pkcs11Config)) {
        if let Ok(value) = std::env::var(TOKEN_ENV) {
            let (slot, library) = value.split_once(':').unwrap();
            let user_pin = SoftToken::USER_PIN.to_owned();
            return body(Pkcs11Config {
                name: "test".into(),
                library: library.into(),
                slot: slot.parse().unwrap(),
                user_pin,
            });
        }
        let dir = tempfile::tempdir().unwrap();
        let token = SoftToken::new(dir.path(), "test").unwrap_or_else(|e| panic!("{e}"));
        let name = format!("core::key_store::tests::{test}");
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args([name.as_str(), "--exact", "--test-threads=1", "--nocapture"])
            .env("SOFTHSM2_CONF", &token.conf)
            .env(TOKEN_ENV, format!("{}:{}", token.config.slot, token.config.library.display()))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("1 passed"),
            "{test} with a token: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Checks an ECDSA P-256 signature (DER) with ring.
    fn verifies(public_point: &[u8], message: &[u8], signature: &[u8]) -> bool {
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, public_point)
            .verify(message, signature)
            .is_ok()
    }

    /// The CSR names `cn` and is signed by the key whose public point it carries: that point.
    fn checked_csr(pem: &str, cn: &str) -> Vec<u8> {
        use x509_parser::prelude::FromDer as _;
        let der = rustls_pemfile::csr(&mut pem.as_bytes()).unwrap().unwrap();
        let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(der.as_ref()).unwrap();
        let info = &csr.certification_request_info;
        assert_eq!(info.subject.iter_common_name().next().unwrap().as_str().unwrap(), cn);
        let point = info.subject_pki.subject_public_key.data.to_vec();
        assert!(verifies(&point, info.raw, &csr.signature_value.data), "the CSR's signature verifies");
        point
    }

    /// Signs through rustls's interface, as a TLS handshake does.
    fn tls_sign(key: &DeviceKey, message: &[u8]) -> Vec<u8> {
        let signer = key.signing_key().unwrap().choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256]).unwrap();
        assert_eq!(signer.scheme(), SignatureScheme::ECDSA_NISTP256_SHA256);
        signer.sign(message).unwrap()
    }

    #[test]
    fn a_pkcs11_uri_names_a_token_key_and_anything_else_is_a_path_or_a_clear_error() {
        let parsed = |text: &str| KeyRef::parse(text).ok();
        let token = |label: &str| Some(KeyRef::Token { label: label.into() });
        assert_eq!(parsed("pkcs11:object=iotdevicekey;type=private"), token("iotdevicekey"));
        assert_eq!(parsed("pkcs11:type=private;object=core%20key"), token("core key"));
        assert_eq!(parsed("pkcs11:object=k"), token("k"));
        assert_eq!(parsed("/greengrass/v2/privKey.key"), Some(KeyRef::File("/greengrass/v2/privKey.key".into())));
        for (uri, says) in [
            ("pkcs11:type=private", "object=LABEL is missing"),
            ("pkcs11:object=", "object=LABEL is missing"),
            ("pkcs11:object=k;type=cert", "type=private"),
            ("pkcs11:object=k;id=%01", "\"id\" is not supported"),
            ("pkcs11:object=k?pin-value=1234", "the PIN is userPin"),
            ("pkcs11:object=k%2", "truncated escape"),
            ("pkcs11:object=k%zz", "bad escape"),
            ("pkcs11:object", "has no '='"),
        ] {
            let e = KeyRef::parse(uri).unwrap_err();
            assert!(matches!(e, KeyStoreError::Config(_)) && e.is_configuration(), "{uri}: {e:?}");
            assert!(e.to_string().contains(says), "{uri}: {e}");
        }
        let label = KeyRef::Token { label: "core key;1".into() };
        assert_eq!(KeyRef::from_path(&label.to_path()).unwrap(), label, "the URI form reads back");
        assert_eq!(
            KeyRef::parse("pkcs11:object=k;type=private").unwrap().to_path().to_str(),
            Some("pkcs11:object=k;type=private")
        );
    }

    #[test]
    fn a_raw_ecdsa_signature_becomes_der_with_minimal_integers() {
        let r = [[0x7fu8; 1].as_slice(), &[0x11; 31]].concat();
        let s = [[0x80u8; 1].as_slice(), &[0x22; 31]].concat();
        let der = ecdsa_der(&[r.clone(), s.clone()].concat());
        assert_eq!(&der[..4], &[0x30, 69, 0x02, 32], "r as is");
        assert_eq!(&der[36..39], &[0x02, 33, 0x00], "s gets a zero so it stays positive");
        let small = [[0u8; 31].as_slice(), &[0x05], &[0u8; 30], &[0x01, 0x02]].concat();
        assert_eq!(ecdsa_der(&small), [0x30, 7, 0x02, 1, 0x05, 0x02, 2, 0x01, 0x02], "leading zeros go");
    }

    #[test]
    fn a_file_key_is_0600_in_a_0700_directory_signs_csrs_and_tls_and_is_deleted() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::files(dir.path().join("keys"));
        let key = store.generate("core").unwrap();
        let path = dir.path().join("keys").join("core.key");
        assert_eq!(key.key_ref(), KeyRef::File(path.clone()));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(&path), mode(path.parent().unwrap())), (0o600, 0o700));
        assert!(!path.with_extension("tmp").exists(), "no temporary file is left");
        let again = store.generate("core").unwrap_err();
        assert!(matches!(again, KeyStoreError::KeyExists(_)), "a key is never replaced: {again:?}");
        let point = checked_csr(&key.csr("site-7").unwrap(), "site-7");
        assert!(verifies(&point, b"hello", &tls_sign(&key, b"hello")));
        assert_eq!(store.key(&key.key_ref()).unwrap().key_ref(), key.key_ref());
        store.delete(&key.key_ref()).unwrap();
        assert!(!path.exists());
        store.delete(&key.key_ref()).unwrap();
        assert!(matches!(store.key(&key.key_ref()), Err(KeyStoreError::File { .. })));
        let token_key = KeyRef::Token { label: "k".into() };
        assert!(matches!(store.key(&token_key), Err(KeyStoreError::NoToken(_))), "a URI needs --pkcs11");
    }

    #[test]
    fn a_token_key_is_made_in_the_token_signs_there_and_cannot_be_read_out() {
        with_token("a_token_key_is_made_in_the_token_signs_there_and_cannot_be_read_out", |config| {
            let store = KeyStore::open(&config).unwrap();
            let key = store.generate("core-key").unwrap();
            assert_eq!(key.key_ref(), KeyRef::Token { label: "core-key".into() });
            let DeviceKey::Token(token_key) = &key else { panic!("{key:?}") };
            let (sensitive, extractable, readable) = token_key.token().exposure(token_key).unwrap();
            assert!(
                sensitive && !extractable && !readable,
                "CKA_VALUE is refused: {sensitive} {extractable} {readable}"
            );
            let again = store.generate("core-key").unwrap_err();
            assert!(matches!(again, KeyStoreError::KeyExists(_)), "{again:?}");

            let point = checked_csr(&key.csr("site-7").unwrap(), "site-7");
            assert_eq!(point, token_key.public, "the CSR carries the token's public key");
            for message in [b"hello".as_slice(), &[0u8; 1000]] {
                assert!(verifies(&point, message, &tls_sign(&key, message)), "TLS signatures verify");
            }
            let found = store.key(&KeyRef::parse("pkcs11:object=core-key;type=private").unwrap()).unwrap();
            assert!(verifies(&point, b"x", &tls_sign(&found, b"x")), "the key is found again by its URI");

            store.delete(&key.key_ref()).unwrap();
            let gone = store.key(&key.key_ref()).unwrap_err();
            assert!(matches!(gone, KeyStoreError::NoSuchKey(ref l) if l == "core-key"), "{gone:?}");
            assert!(gone.to_string().contains("no private key labelled \"core-key\""), "{gone}");
            store.delete(&key.key_ref()).unwrap();
        });
    }

    #[test]
    fn a_missing_or_unloadable_library_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let not_a_library = dir.path().join("libnot.so");
        std::fs::write(&not_a_library, "not a shared object").unwrap();
        for library in [dir.path().join("missing.so"), not_a_library] {
            let config = Pkcs11Config { name: "hsm".into(), library: library.clone(), slot: 0, user_pin: "1".into() };
            let e = KeyStore::open(&config).unwrap_err();
            assert!(matches!(e, KeyStoreError::Library { .. }) && e.is_configuration(), "{e:?}");
            let says = format!("PKCS#11 provider hsm: cannot load the library {}", library.display());
            assert!(e.to_string().starts_with(&says), "{e}");
        }
    }

    #[test]
    fn a_wrong_user_pin_is_refused_clearly() {
        with_token("a_wrong_user_pin_is_refused_clearly", |config| {
            let e = KeyStore::open(&Pkcs11Config { user_pin: "0000".into(), ..config.clone() }).unwrap_err();
            assert!(matches!(e, KeyStoreError::WrongPin { .. }) && e.is_configuration(), "{e:?}");
            assert!(e.to_string().contains("refused the user PIN"), "{e}");
        });
    }

    #[test]
    fn a_slot_without_a_token_is_named_with_the_slots_that_have_one() {
        with_token("a_slot_without_a_token_is_named_with_the_slots_that_have_one", |config| {
            let wrong = config.slot.wrapping_add(1);
            let e = KeyStore::open(&Pkcs11Config { slot: wrong, ..config.clone() }).unwrap_err();
            assert!(matches!(&e, KeyStoreError::NoSlot { available, .. } if available.contains(&config.slot)), "{e:?}");
            assert!(e.to_string().contains(&format!("no token in slot {wrong}")), "{e}");
        });
    }

    #[test]
    fn a_label_that_is_not_in_the_token_is_named() {
        with_token("a_label_that_is_not_in_the_token_is_named", |config| {
            let store = KeyStore::open(&config).unwrap();
            let e = store.key(&KeyRef::parse("pkcs11:object=nobody;type=private").unwrap()).unwrap_err();
            assert!(matches!(e, KeyStoreError::NoSuchKey(_)) && e.is_configuration(), "{e:?}");
            assert_eq!(e.to_string(), "no private key labelled \"nobody\" in the token");
        });
    }

    #[test]
    fn the_providers_configuration_reads_from_yaml_and_hides_the_pin() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pkcs11.yaml");
        std::fs::write(&path, "name: hsm\nlibrary: /usr/lib/softhsm/libsofthsm2.so\nslot: 12345\nuserPin: s3cret\n")
            .unwrap();
        let config = Pkcs11Config::from_file(&path).unwrap();
        assert_eq!((config.name.as_str(), config.slot, config.user_pin.as_str()), ("hsm", 12345, "s3cret"));
        assert!(!format!("{config:?}").contains("s3cret"));
        std::fs::write(&path, "name: hsm\nlibrary: /l.so\nslot: 1\nuserPin: 1234\n").unwrap();
        assert_eq!(Pkcs11Config::from_file(&path).unwrap().user_pin, "1234", "a PIN written as a number");
        std::fs::write(&path, "name: hsm\nlibrary: /l.so\nslot: 1\n").unwrap();
        let e = Pkcs11Config::from_file(&path).unwrap_err();
        assert!(e.to_string().contains("userPin"), "{e}");
    }
}
