//! A small certificate authority for development, tests and single-machine TLS
//! (`musicrl security init`): a CA, one server certificate for the given names (server auth
//! only), one client certificate (client auth only), per-role tokens and a reward key,
//! written as files `[security]` points at.
//! A cluster uses cert-manager or its own CA instead (`deploy/`, `docs/operations.md`).

use std::path::{Path, PathBuf};

use rand::RngExt;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use musicrl_config::SecurityConfig;

fn err(e: rcgen::Error) -> musicrl_common::Error {
    musicrl_common::Error::Internal(format!("certificate generation: {e}"))
}

fn random_secret() -> String {
    let mut rng = rand::rng();
    (0..32)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}

/// What [`init`] wrote.
#[derive(Debug, Clone)]
pub struct Written {
    pub dir: PathBuf,
    /// `[security]` for a process of every role on this machine (servers and clients).
    pub config: SecurityConfig,
    pub tokens: Vec<(String, String)>,
}

/// Writes `dir/{ca.pem, server.pem, server.key, client.pem, client.key, tokens,
/// actor.token, operator.token, admin.token, reward.keys}`; the server certificate names
/// `names` (DNS names or IP addresses). Private files are mode 0600.
pub fn init(dir: &Path, names: &[String]) -> musicrl_common::Result<Written> {
    std::fs::create_dir_all(dir).map_err(|e| musicrl_common::Error::io(dir, e))?;
    let write = |name: &str, text: &str| -> musicrl_common::Result<PathBuf> {
        let path = dir.join(name);
        musicrl_config::fsutil::write_atomic(&path, text.as_bytes())?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| musicrl_common::Error::io(&path, e))?;
        }
        Ok(path)
    };

    let ca_key = KeyPair::generate().map_err(err)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "musicrl development CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(err)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf = |names: Vec<String>, cn: &str, usages: Vec<ExtendedKeyUsagePurpose>| {
        let key = KeyPair::generate().map_err(err)?;
        let mut params = CertificateParams::new(names).map_err(err)?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = usages;
        let cert = params.signed_by(&key, &issuer).map_err(err)?;
        Ok::<_, musicrl_common::Error>((cert.pem(), key.serialize_pem()))
    };
    let (server_pem, server_key) = leaf(
        names.to_vec(),
        "musicrl server",
        // Server auth only: clients (actors) get their own certificate below and never hold
        // this key (deploy/secrets.sh puts the two in separate Secrets).
        vec![ExtendedKeyUsagePurpose::ServerAuth],
    )?;
    let (client_pem, client_key) = leaf(
        Vec::new(),
        "musicrl client",
        vec![ExtendedKeyUsagePurpose::ClientAuth],
    )?;
    let ca = write("ca.pem", &ca_cert.pem())?;
    let cert = write("server.pem", &server_pem)?;
    let key = write("server.key", &server_key)?;
    let client_cert = write("client.pem", &client_pem)?;
    let client_key_path = write("client.key", &client_key)?;

    let tokens: Vec<(String, String)> = ["actor", "operator", "admin"]
        .iter()
        .map(|r| (r.to_string(), random_secret()))
        .collect();
    let mut table = String::from("# ROLE TOKEN (musicrl security init)\n");
    for (role, token) in &tokens {
        table.push_str(&format!("{role} {token}\n"));
        write(&format!("{role}.token"), &format!("{token}\n"))?;
    }
    let tokens_file = write("tokens", &table)?;
    let reward_keys = write("reward.keys", &format!("{}\n", random_secret()))?;
    Ok(Written {
        dir: dir.to_path_buf(),
        config: SecurityConfig {
            tls_cert: cert,
            tls_key: key,
            tls_client_ca: ca.clone(),
            tls_ca: ca,
            tls_client_cert: client_cert,
            tls_client_key: client_key_path,
            tls_server_name: String::new(),
            tokens_file,
            token_file: dir.join("admin.token"),
            reward_keys_file: reward_keys,
            ..SecurityConfig::default()
        },
        tokens,
    })
}
