//! Certificates and keys for a control plane, made with `rcgen` (ECDSA P-256).

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, date_time_ymd,
};

/// A certificate and its private key, both PEM.
pub(crate) struct CertKey {
    pub cert: String,
    pub key: String,
}

/// Everything a control plane needs.
pub(crate) struct Pki {
    /// The cluster CA (signs the serving and client certificates).
    pub ca: CertKey,
    /// kube-apiserver's serving certificate (127.0.0.1, localhost, the service IP).
    pub serving: CertKey,
    /// The admin client certificate (`CN=admin`, `O=system:masters`).
    pub admin: CertKey,
    /// kube-controller-manager's client certificate
    /// (`CN=system:kube-controller-manager`, `O=system:masters`).
    pub controller_manager: CertKey,
    /// The service-account token signing key (PKCS#8 PEM).
    pub service_account_key: String,
    /// Its public half (SPKI PEM).
    pub service_account_pub: String,
}

fn params(sans: &[&str], cn: &str, orgs: &[&str]) -> Result<CertificateParams> {
    let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .context("certificate subject alternative names")?;
    p.not_before = date_time_ymd(2020, 1, 1);
    p.not_after = date_time_ymd(2100, 1, 1);
    let mut dn = DistinguishedName::new();
    for org in orgs {
        dn.push(DnType::OrganizationName, *org);
    }
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    Ok(p)
}

fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    sans: &[&str],
    cn: &str,
    orgs: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> Result<CertKey> {
    let mut p = params(sans, cn, orgs)?;
    p.use_authority_key_identifier_extension = true;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![usage];
    let key = KeyPair::generate()?;
    let cert = p
        .signed_by(&key, issuer)
        .with_context(|| format!("signing certificate for {cn}"))?;
    Ok(CertKey {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// Generates a fresh CA and all certificates and keys.
pub(crate) fn generate() -> Result<Pki> {
    let mut ca_params = params(&[], "autoheal-testkit-ca", &[])?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .context("self-signing the CA")?;
    let ca = CertKey {
        cert: ca_cert.pem(),
        key: ca_key.serialize_pem(),
    };
    let issuer = Issuer::new(ca_params, ca_key);

    let serving = leaf(
        &issuer,
        &[
            "127.0.0.1",
            "localhost",
            "10.0.0.1",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ],
        "kube-apiserver",
        &[],
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    let admin = leaf(
        &issuer,
        &[],
        "admin",
        &["system:masters"],
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;
    let controller_manager = leaf(
        &issuer,
        &[],
        "system:kube-controller-manager",
        &["system:masters"],
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;
    let sa = KeyPair::generate()?;
    Ok(Pki {
        ca,
        serving,
        admin,
        controller_manager,
        service_account_key: sa.serialize_pem(),
        service_account_pub: sa.public_key_pem(),
    })
}
