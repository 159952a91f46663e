//! What a claim looks like in etcd: one key per registered name, its value the owner and
//! the entry's metadata.
//!
//! ```text
//! key:   {prefix}/names/{namespace}/{key node}/i/{integer name}
//!        {prefix}/names/{namespace}/{key node}/s/{string name}
//! value: {"node":2,"pid":4294967297,"meta":{"caps":["search"],"health":"healthy",
//!         "attrs":[["region",{"str":"eu-west"}]]}}
//! ```
//!
//! Each cluster-wide namespace also has a marker, `{prefix}/namespaces/{namespace}`
//! (empty value, no lease), so that a node knows it from the moment it joins.
//!
//! Namespace and string names are percent-escaped (`%` and `/` only), so keys stay
//! readable with `etcdctl get --prefix` and a name never splits into path segments.
//! The value is JSON: an operator can read it, and a newer version can add fields.

use roster::{Health, Metadata, Node, OwnedKey, OwnedName, Value, ValueRef};
use serde::{Deserialize, Serialize};

/// The etcd key prefix of every claim under `prefix`.
pub(crate) fn names_prefix(prefix: &str) -> String {
    format!("{prefix}/names/")
}

/// The etcd key prefix of the namespace markers under `prefix`: one key per cluster-wide
/// namespace, so a node learns every one of them when it joins.
pub(crate) fn namespaces_prefix(prefix: &str) -> String {
    format!("{prefix}/namespaces/")
}

/// The marker key of the namespace called `name`.
pub(crate) fn namespace_key(prefix: &str, name: &str) -> Vec<u8> {
    let mut out = namespaces_prefix(prefix);
    escape(name, &mut out);
    out.into_bytes()
}

/// The namespace a marker key names.
pub(crate) fn parse_namespace_key(prefix: &str, raw: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(raw).ok()?;
    unescape(s.strip_prefix(&namespaces_prefix(prefix))?).filter(|n| !n.is_empty())
}

/// The etcd key of a claim on `key` in the namespace called `namespace`.
pub(crate) fn claim_key(prefix: &str, namespace: &str, key: &roster::Key<'_>) -> Vec<u8> {
    let mut out = names_prefix(prefix);
    escape(namespace, &mut out);
    out.push('/');
    out.push_str(&key.node().0.to_string());
    match key.name() {
        roster::Name::Int(n) => {
            out.push_str("/i/");
            out.push_str(&n.to_string());
        }
        roster::Name::Str(s) => {
            out.push_str("/s/");
            escape(s, &mut out);
        }
    }
    out.into_bytes()
}

/// A claim key split into its namespace name, key node and name; `None` for a key that
/// is not one (written by something else under the prefix).
pub(crate) fn parse_claim_key(prefix: &str, raw: &[u8]) -> Option<(String, Node, OwnedName)> {
    let s = std::str::from_utf8(raw).ok()?;
    let rest = s.strip_prefix(&names_prefix(prefix))?;
    let mut parts = rest.splitn(4, '/');
    let namespace = unescape(parts.next()?)?;
    let node = Node(parts.next()?.parse().ok()?);
    let kind = parts.next()?;
    let name = parts.next()?;
    let name = match kind {
        "i" => OwnedName::Int(name.parse().ok()?),
        "s" => OwnedName::Str(unescape(name)?),
        _ => return None,
    };
    if namespace.is_empty() {
        return None;
    }
    Some((namespace, node, name))
}

fn escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            c => out.push(c),
        }
    }
}

fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        match rest.get(i + 1..i + 3)? {
            "25" => out.push('%'),
            "2F" => out.push('/'),
            _ => return None,
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// The value of a claim: who holds the name, and the entry's metadata.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Claim {
    pub node: u32,
    pub pid: u64,
    pub meta: Meta,
}

/// [`Metadata`] as JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Meta {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    caps: Vec<String>,
    #[serde(default)]
    health: HealthJson,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    attrs: Vec<(String, ValueJson)>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum HealthJson {
    #[default]
    Unknown,
    Healthy,
    Degraded,
    Unhealthy,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ValueJson {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
}

impl Claim {
    /// The claim of `pid` on `node` for an entry with `metadata`.
    pub(crate) fn new(node: Node, pid: u64, metadata: &Metadata) -> Claim {
        let health = match metadata.get_health() {
            Health::Healthy => HealthJson::Healthy,
            Health::Degraded => HealthJson::Degraded,
            Health::Unhealthy => HealthJson::Unhealthy,
            _ => HealthJson::Unknown,
        };
        let attrs = metadata
            .attributes()
            .map(|(k, v)| {
                let v = match v {
                    ValueRef::Bool(b) => ValueJson::Bool(b),
                    ValueRef::Int(i) => ValueJson::Int(i),
                    ValueRef::Float(x) => ValueJson::Float(x),
                    ValueRef::Str(s) => ValueJson::Str(s.to_owned()),
                    ValueRef::Bytes(b) => ValueJson::Bytes(b.to_vec()),
                };
                (k.to_owned(), v)
            })
            .collect();
        Claim {
            node: node.0,
            pid,
            meta: Meta {
                caps: metadata.capabilities().map(str::to_owned).collect(),
                health,
                attrs,
            },
        }
    }

    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a claim always serializes")
    }

    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<Claim> {
        serde_json::from_slice(bytes).ok()
    }

    /// The entry's metadata, its node set to the owner's.
    pub(crate) fn metadata(&self) -> Metadata {
        let health = match self.meta.health {
            HealthJson::Unknown => Health::Unknown,
            HealthJson::Healthy => Health::Healthy,
            HealthJson::Degraded => Health::Degraded,
            HealthJson::Unhealthy => Health::Unhealthy,
        };
        let mut m = Metadata::new().health(health).node(Node(self.node));
        for c in &self.meta.caps {
            m = m.capability(c.as_str());
        }
        for (k, v) in &self.meta.attrs {
            let v = match v {
                ValueJson::Bool(b) => Value::Bool(*b),
                ValueJson::Int(i) => Value::Int(*i),
                ValueJson::Float(x) => Value::Float(*x),
                ValueJson::Str(s) => Value::Str(s.clone()),
                ValueJson::Bytes(b) => Value::Bytes(b.clone()),
            };
            m = m.attribute(k.as_str(), v);
        }
        m
    }
}

/// A claim key, parsed, with the namespace resolved in one registry.
pub(crate) fn owned_key(
    registry: &roster::Registry,
    namespace: &str,
    node: Node,
    name: OwnedName,
) -> Result<OwnedKey, roster::Error> {
    Ok(OwnedKey {
        namespace: registry.namespace(namespace)?,
        node,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use roster::{Key, Registry};

    #[test]
    fn claim_keys_round_trip_through_escaping() {
        let registry = Registry::builder().shards(1).build().unwrap();
        let ns = registry.namespace("a/b%c").unwrap();
        for key in [
            Key::new(ns, "x/y%2Fz"),
            Key::new(ns, 7).on_node(Node(3)),
            Key::new(ns, "plain"),
        ] {
            let raw = claim_key("/roster", "a/b%c", &key);
            let (namespace, node, name) = parse_claim_key("/roster", &raw).unwrap();
            assert_eq!(namespace, "a/b%c");
            let owned = owned_key(&registry, &namespace, node, name).unwrap();
            assert_eq!(owned.as_key(), key);
        }
        assert_eq!(
            claim_key("/r", "ns", &Key::new(ns, "a/b")),
            b"/r/names/ns/0/s/a%2Fb".to_vec()
        );
        assert!(parse_claim_key("/r", b"/r/names/ns/0/q/x").is_none());
        assert!(parse_claim_key("/r", b"/r/names/ns/0/s/bad%41").is_none());
        assert!(parse_claim_key("/r", b"/other/names/ns/0/i/1").is_none());
        let marker = namespace_key("/r", "a/b");
        assert_eq!(marker, b"/r/namespaces/a%2Fb".to_vec());
        assert_eq!(parse_namespace_key("/r", &marker).as_deref(), Some("a/b"));
        assert!(parse_namespace_key("/r", b"/r/names/x").is_none());
    }

    #[test]
    fn claims_carry_every_metadata_field() {
        let meta = Metadata::new()
            .capability("search")
            .capability("plan")
            .health(Health::Degraded)
            .attribute("region", "eu")
            .attribute("slots", 4)
            .attribute("ok", true)
            .attribute("load", 0.5)
            .attribute("blob", vec![1u8, 2, 3]);
        let claim = Claim::new(Node(2), 99, &meta);
        let back = Claim::from_bytes(&claim.to_bytes()).unwrap();
        assert_eq!(back, claim);
        assert_eq!(back.metadata(), meta.node(Node(2)));
        assert!(Claim::from_bytes(b"not json").is_none());
    }
}
