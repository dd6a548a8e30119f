//! Image references (`nginx`, `user/app:1.2`, `localhost:5000/x@sha256:...`), parsed and
//! normalised as upstream's `distribution/reference` `ParseNormalizedNamed` + `TagNameOnly`
//! do, so that `nginx` and `docker.io/library/nginx:latest` name the same image everywhere
//! (store index, kubelet, CLI).

use std::fmt;

/// The registry an unqualified name belongs to.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// Docker Hub's registry API host (`docker.io` itself does not serve the v2 API).
pub const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";
const LEGACY_DEFAULT_REGISTRY: &str = "index.docker.io";
const OFFICIAL_REPO_PREFIX: &str = "library/";
const DEFAULT_TAG: &str = "latest";
const NAME_TOTAL_LENGTH_MAX: usize = 255;
const TAG_LENGTH_MAX: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid reference format: {0:?} is empty")]
    Empty(String),
    #[error("invalid reference format: repository name {0:?} must be lowercase")]
    Uppercase(String),
    #[error("invalid repository name ({0}), cannot specify 64-byte hexadecimal strings")]
    HexIdentifier(String),
    #[error("invalid reference format: {reference:?}: {reason}")]
    Invalid { reference: String, reason: String },
    #[error("repository name {0:?} must not be more than {NAME_TOTAL_LENGTH_MAX} characters")]
    NameTooLong(String),
}

/// A normalised image reference: always a registry and a full repository path; a tag
/// unless only a digest was given (then no tag is invented, as upstream).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl Reference {
    /// Parses and normalises a reference as a user or a pod spec writes it.
    pub fn parse(input: &str) -> Result<Reference, ReferenceError> {
        let invalid = |reason: &str| ReferenceError::Invalid {
            reference: input.to_string(),
            reason: reason.to_string(),
        };
        if input.is_empty() {
            return Err(ReferenceError::Empty(input.to_string()));
        }
        if input.len() == 64 && is_lower_hex(input) {
            return Err(ReferenceError::HexIdentifier(input.to_string()));
        }
        // name[:tag][@digest]
        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => {
                validate_digest(digest).map_err(|r| invalid(&r))?;
                (rest, Some(digest.to_string()))
            }
            None => (input, None),
        };
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(tag) = tag {
            if !valid_tag(tag) {
                return Err(invalid(&format!("invalid tag {tag:?}")));
            }
        }
        if name.is_empty() {
            return Err(invalid("empty repository name"));
        }
        let (registry, remainder) = split_domain(name);
        if remainder.to_ascii_lowercase() != remainder {
            return Err(ReferenceError::Uppercase(remainder.to_string()));
        }
        if !valid_domain(&registry) {
            return Err(invalid(&format!("invalid registry host {registry:?}")));
        }
        if !remainder.split('/').all(valid_path_component) {
            return Err(invalid(&format!("invalid repository path {remainder:?}")));
        }
        let repository = if registry == DEFAULT_REGISTRY && !remainder.contains('/') {
            format!("{OFFICIAL_REPO_PREFIX}{remainder}")
        } else {
            remainder.to_string()
        };
        if registry.len() + 1 + repository.len() > NAME_TOTAL_LENGTH_MAX {
            return Err(ReferenceError::NameTooLong(format!(
                "{registry}/{repository}"
            )));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_string()),
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The registry host as named (`docker.io`, `localhost:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The host to talk the registry API to (`docker.io` is served by `registry-1.docker.io`).
    pub fn api_host(&self) -> &str {
        if self.registry == DEFAULT_REGISTRY {
            DOCKER_HUB_API_HOST
        } else {
            &self.registry
        }
    }

    /// The repository path inside the registry (`library/nginx`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// What to ask the registry for: the digest if there is one (it pins), else the tag.
    pub fn manifest_selector(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or(DEFAULT_TAG)
    }

    /// The same repository with another tag and no digest (an OCI layout's bare-tag names).
    pub fn with_tag(&self, tag: &str) -> Result<Reference, ReferenceError> {
        Reference::parse(&format!("{}:{tag}", self.name()))
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

/// Upstream's splitDockerDomain: the first component is a registry only if it looks like a
/// host (has `.` or `:`, or is `localhost`, or has uppercase letters).
fn split_domain(name: &str) -> (String, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.to_ascii_lowercase() != first =>
        {
            let domain = if first == LEGACY_DEFAULT_REGISTRY {
                DEFAULT_REGISTRY
            } else {
                first
            };
            (domain.to_string(), rest)
        }
        _ => (DEFAULT_REGISTRY.to_string(), name),
    }
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `[\w][\w.-]{0,127}`
fn valid_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= TAG_LENGTH_MAX
        && word(bytes[0])
        && bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-')
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_path_component(c: &str) -> bool {
    let bytes = c.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    let mut expect_alnum = true;
    if bytes.is_empty() {
        return false;
    }
    while i < bytes.len() {
        if expect_alnum {
            if !alnum(bytes[i]) {
                return false;
            }
            while i < bytes.len() && alnum(bytes[i]) {
                i += 1;
            }
            expect_alnum = false;
        } else {
            // A separator, then alphanumerics again.
            let sep_len = match bytes[i] {
                b'.' => 1,
                b'_' if bytes.get(i + 1) == Some(&b'_') => 2,
                b'_' => 1,
                b'-' => bytes[i..].iter().take_while(|&&b| b == b'-').count(),
                _ => return false,
            };
            i += sep_len;
            if i >= bytes.len() {
                return false;
            }
            expect_alnum = true;
        }
    }
    true
}

/// Host components, optionally `:port`, or a bracketed IPv6 address.
fn valid_domain(domain: &str) -> bool {
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        match rest.split_once(']') {
            Some((v6, after)) => {
                if v6.parse::<std::net::Ipv6Addr>().is_err() {
                    return false;
                }
                match after {
                    "" => return true,
                    p => match p.strip_prefix(':') {
                        Some(port) => ("", Some(port)),
                        None => return false,
                    },
                }
            }
            None => return false,
        }
    } else {
        match domain.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (domain, None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    if !domain.starts_with('[') {
        let component_ok = |c: &str| {
            let b = c.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
        };
        if !host.split('.').all(component_ok) {
            return false;
        }
    }
    true
}

/// `algorithm:encoded`; sha256/sha512 must have their exact lowercase hex length.
pub(crate) fn validate_digest(digest: &str) -> Result<(), String> {
    let (alg, hex) = digest
        .split_once(':')
        .ok_or_else(|| format!("invalid digest {digest:?}: no algorithm"))?;
    let want = match alg {
        "sha256" => 64,
        "sha512" => 128,
        other => return Err(format!("unsupported digest algorithm {other:?}")),
    };
    if hex.len() != want || !is_lower_hex(hex) {
        return Err(format!(
            "invalid digest {digest:?}: want {want} lowercase hex characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn normalises_as_upstream() {
        let d = D;
        let cases: Vec<(String, String)> = vec![
            ("nginx".into(), "docker.io/library/nginx:latest".into()),
            ("nginx:1.25".into(), "docker.io/library/nginx:1.25".into()),
            ("user/app".into(), "docker.io/user/app:latest".into()),
            (
                "docker.io/nginx".into(),
                "docker.io/library/nginx:latest".into(),
            ),
            (
                "index.docker.io/user/app:v1".into(),
                "docker.io/user/app:v1".into(),
            ),
            (
                "docker.io/library/nginx:latest".into(),
                "docker.io/library/nginx:latest".into(),
            ),
            ("localhost/x".into(), "localhost/x:latest".into()),
            ("localhost:5000/x:tag".into(), "localhost:5000/x:tag".into()),
            (
                "127.0.0.1:5000/a/b".into(),
                "127.0.0.1:5000/a/b:latest".into(),
            ),
            (
                "registry.example/a/b".into(),
                "registry.example/a/b:latest".into(),
            ),
            (
                format!("registry.example/a/b@{d}"),
                format!("registry.example/a/b@{d}"),
            ),
            (
                format!("nginx:1.25@{d}"),
                format!("docker.io/library/nginx:1.25@{d}"),
            ),
            (format!("nginx@{d}"), format!("docker.io/library/nginx@{d}")),
            (
                "gcr.io/a-b/c_d/e.f--g:V1.0_x-y".into(),
                "gcr.io/a-b/c_d/e.f--g:V1.0_x-y".into(),
            ),
            ("[::1]:5000/x".into(), "[::1]:5000/x:latest".into()),
            ("a__b".into(), "docker.io/library/a__b:latest".into()),
        ];
        for (input, want) in cases {
            let got = Reference::parse(&input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(got.to_string(), want, "input {input}");
            // Normalising is idempotent.
            assert_eq!(Reference::parse(&want).unwrap(), got, "reparse {want}");
        }
    }

    #[test]
    fn parts() {
        let r = Reference::parse("localhost:5000/team/app:v2").unwrap();
        assert_eq!(r.registry(), "localhost:5000");
        assert_eq!(r.api_host(), "localhost:5000");
        assert_eq!(r.repository(), "team/app");
        assert_eq!(r.tag(), Some("v2"));
        assert_eq!(r.digest(), None);
        assert_eq!(r.name(), "localhost:5000/team/app");
        assert_eq!(r.manifest_selector(), "v2");
        let hub = Reference::parse(&format!("busybox@{D}")).unwrap();
        assert_eq!(hub.api_host(), DOCKER_HUB_API_HOST);
        assert_eq!(hub.manifest_selector(), D);
        assert_eq!(hub.tag(), None);
    }

    #[test]
    fn rejects_invalid() {
        let long = format!("a/{}", "b".repeat(260));
        let hex64 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let cases: Vec<&str> = vec![
            "",
            "Nginx",
            "user/App",
            "docker.io/Library/nginx",
            "nginx:",
            "nginx:-bad",
            "nginx:bad/tag",
            "nginx:a+b",
            "nginx@sha256:abc",
            "nginx@sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "nginx@md5:abc",
            "nginx@",
            ":tag",
            "a//b",
            "/a",
            "a/",
            "a_-b",
            "a..b",
            "-a",
            "a-",
            "registry.example:port/x",
            "bad_host.example/x",
            hex64,
            &long,
        ];
        for input in cases {
            assert!(
                Reference::parse(input).is_err(),
                "{input:?} should be rejected, got {:?}",
                Reference::parse(input)
            );
        }
        assert!(matches!(
            Reference::parse("user/App"),
            Err(ReferenceError::Uppercase(_))
        ));
        assert!(matches!(
            Reference::parse(hex64),
            Err(ReferenceError::HexIdentifier(_))
        ));
    }

    #[test]
    fn uppercase_first_component_is_a_host() {
        // Upstream treats an uppercase first component as a domain (then validates it).
        let r = Reference::parse("Registry.Example/app").unwrap();
        assert_eq!(r.registry(), "Registry.Example");
    }

    #[test]
    fn with_tag_replaces_tag_and_digest() {
        let r = Reference::parse(&format!("example.com/x:1@{D}")).unwrap();
        assert_eq!(r.with_tag("2").unwrap().to_string(), "example.com/x:2");
    }
}
