//! Property tests of the naming and routing rules (see `catalog`): for any set of
//! services (of several owners, registered at different times) and tool names,
//! colliding or not, odd, hostile or over-long, every tool gets exactly one public name
//! inside `^[a-zA-Z0-9_-]{1,64}$`, every public and qualified name routes to the tool it
//! names, a bare name stays with the owner who offered it first (several services of
//! that owner make it ambiguous, answered with the choices), and no tool's own name can
//! shadow another service's qualified name.

use std::{collections::HashMap, sync::Arc};

use gateway::{
    catalog::{Catalog, Lookup, SEPARATOR, qualify, tool_name as mapped},
    upstream::{Instance, Origin, Service, Source},
    vocab::{normalize_url, validate_name},
};
use proptest::prelude::*;
use rmcp::model::Tool;
use tokio_util::sync::CancellationToken;

fn tool(name: &str) -> Tool {
    serde_json::from_value(serde_json::json!({
        "name": name,
        "inputSchema": {"type": "object"}
    }))
    .expect("tool")
}

/// One generated service: name, owner, when it registered, its tools.
#[derive(Debug, Clone)]
struct Spec {
    name: String,
    owner: Option<String>,
    since: u64,
    tools: Vec<String>,
}

fn service(spec: &Spec, parent: &CancellationToken) -> Arc<Service> {
    let options = gateway::Config::default().upstream_options();
    let service = Service::new(&spec.name, &options, None);
    let instance = Instance::new(
        &spec.name,
        &format!("http://127.0.0.1:1/{}", spec.name),
        1,
        Origin {
            source: Source::Registered,
            registered_at_ms: spec.since,
            owner: spec.owner.as_deref().map(Arc::from),
            auth: None,
            command: None,
        },
        spec.tools.iter().map(|t| tool(t)).collect(),
        options,
        parent,
    );
    service.set_instances(vec![instance]);
    service
}

fn valid_public(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Service names as the registry accepts them.
fn service_name() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => prop::sample::select(vec!["s1", "s2", "shop"]).prop_map(String::from),
        3 => "[a-z0-9][a-z0-9-]{0,12}(_[a-z0-9]{1,4})?",
    ]
    .prop_filter("registry-valid", |n| validate_name(n).is_ok())
}

/// Tool names from a small pool (so collisions are common, including names inside other
/// services' namespaces), or anything at all: control characters, bidi overrides,
/// markup, the empty name, very long names.
fn tool_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "get", "list", "search", "getProductById", "a-b", "x_y",
            "s1__get", "s2__list", "shop__get", "get.product", "", "a\u{1b}[31mb", "<b>x</b>",
            "\u{202e}evil",
        ])
        .prop_map(String::from),
        1 => "[a-zA-Z0-9_./ -]{1,90}",
        1 => "\\PC{0,120}",
    ]
}

fn services() -> impl Strategy<Value = Vec<Spec>> {
    prop::collection::btree_map(
        service_name(),
        (
            prop::option::of(prop::sample::select(vec!["alice", "bob"]).prop_map(String::from)),
            0u64..4,
            prop::collection::vec(tool_name(), 0..8),
        ),
        1..6,
    )
    .prop_map(|m| {
        m.into_iter()
            .map(|(name, (owner, since, tools))| Spec {
                name,
                owner,
                since,
                tools,
            })
            .collect()
    })
}

/// `key` lies in another listed service's namespace.
fn foreign(key: &str, own: &str, spec: &[Spec]) -> bool {
    spec.iter().any(|s| {
        s.name != own
            && key
                .strip_prefix(s.name.as_str())
                .is_some_and(|rest| rest.starts_with(SEPARATOR))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_tool_has_one_public_name_and_every_name_routes_to_its_tool(spec in services()) {
        let parent = CancellationToken::new();
        let upstreams: Vec<Arc<Service>> = spec.iter().map(|s| service(s, &parent)).collect();
        let catalog = Catalog::build(&upstreams);

        // Each service's distinct entries (by the name they are listed under when alone;
        // a repeated one counts once), and who offers each bare name.
        let mut pairs: Vec<(usize, String, String)> = Vec::new();
        let mut offered_by: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, s) in spec.iter().enumerate() {
            let mut seen = std::collections::HashSet::new();
            for t in &s.tools {
                let key = mapped(t).into_owned();
                prop_assert!(valid_public(&key), "mapped name {:?} of {:?}", key, t);
                if seen.insert(key.clone()) {
                    if !foreign(&key, &s.name, &spec) {
                        offered_by.entry(key.clone()).or_default().push(i);
                    }
                    pairs.push((i, t.clone(), key));
                }
            }
        }
        // Who holds each bare name: the owner who came first (then the service's order).
        let holders = |key: &str| -> Vec<usize> {
            let offering = &offered_by[key];
            let first = *offering.iter().min_by_key(|i| (spec[**i].since, **i)).expect("offered");
            offering.iter().copied().filter(|i| spec[*i].owner == spec[first].owner).collect()
        };

        // One public entry per pair; public names unique and valid.
        let public: Vec<&str> = catalog.tools().iter().map(|t| t.name.as_ref()).collect();
        prop_assert_eq!(public.len(), pairs.len());
        let unique: std::collections::HashSet<&str> = public.iter().copied().collect();
        prop_assert_eq!(unique.len(), public.len(), "duplicate public names: {:?}", public);
        for name in &public {
            prop_assert!(valid_public(name), "invalid public name {:?}", name);
        }

        // Every public name routes to exactly one pair, and each pair has one.
        let mut public_of: HashMap<(usize, &str), &str> = HashMap::new();
        for name in &public {
            let Lookup::Found(route) = catalog.lookup(name) else {
                prop_assert!(false, "public name {} does not route", name);
                continue;
            };
            let pair = pairs.iter().find(|(i, t, _)| {
                spec[*i].name == *route.service.name && *t == *route.original
            });
            prop_assert!(pair.is_some(), "{} routes to an unknown tool", name);
            if let Some((i, t, _)) = pair {
                let previous = public_of.insert((*i, t.as_str()), name);
                prop_assert!(previous.is_none(), "two public names for one tool: {}", name);
            }
        }
        prop_assert_eq!(public_of.len(), pairs.len());

        for (i, original, key) in &pairs {
            let svc = spec[*i].name.as_str();
            let listed = public_of[&(*i, original.as_str())];
            let qualified = qualify(svc, key);
            prop_assert!(valid_public(&qualified), "{}", qualified);
            if foreign(key, svc, &spec) {
                // Inside another service's namespace: never listed bare.
                prop_assert_ne!(listed, key.as_str(), "{} shadows another service's name", key);
            } else {
                let holders = holders(key);
                if holders == [*i] {
                    prop_assert_eq!(listed, key.as_str());
                    match catalog.lookup(key) {
                        Lookup::Found(r) => prop_assert_eq!(&*r.service.name, svc),
                        _ => prop_assert!(false, "{} should lead to its holder", key),
                    }
                } else {
                    prop_assert_ne!(listed, key.as_str());
                    if holders.len() > 1 && !public.contains(&key.as_str()) {
                        match catalog.lookup(key) {
                            Lookup::Ambiguous(choices) => {
                                prop_assert_eq!(choices.len(), holders.len(), "{:?}", choices);
                                if holders.contains(i) {
                                    prop_assert!(choices.iter().any(|c| c == listed), "{:?}", choices);
                                }
                            }
                            _ => prop_assert!(false, "{} should be ambiguous", key),
                        }
                    }
                }
            }
            // The qualified form leads here, unless the same service lists that very
            // name as another tool's.
            let own_shadow = pairs
                .iter()
                .any(|(j, t, _)| j == i && t != original && public_of[&(*j, t.as_str())] == qualified);
            if !own_shadow {
                match catalog.lookup(&qualified) {
                    Lookup::Found(route) => {
                        prop_assert_eq!(&*route.service.name, svc, "{}", qualified);
                        prop_assert_eq!(&*route.original, original.as_str(), "{}", qualified);
                    }
                    _ => prop_assert!(false, "{} does not route", qualified),
                }
            }
        }
        // A name nobody offers is unknown.
        let unknown = matches!(catalog.lookup("no-such-tool-\u{1F600}"), Lookup::Unknown);
        prop_assert!(unknown, "a name nobody offers");
    }

    #[test]
    fn qualified_names_are_valid_and_split_back_when_clean(svc in service_name(), t in tool_name()) {
        let q = qualify(&svc, &t);
        prop_assert!(valid_public(&q), "{}", q);
        let clean = t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if clean && svc.len() + SEPARATOR.len() + t.len() <= 64 {
            prop_assert_eq!(q.split_once(SEPARATOR), Some((svc.as_str(), t.as_str())));
        }
    }

    #[test]
    fn accepted_service_names_cannot_hide_the_separator(
        name in prop_oneof![
            // Mostly names the registry's alphabet allows, with separators in them.
            3 => "[a-z0-9_-]{0,30}(__)?[a-z0-9_-]{0,30}",
            1 => "\\PC{0,70}",
        ]
    ) {
        if validate_name(&name).is_ok() {
            prop_assert!(!name.contains(SEPARATOR));
            prop_assert!(valid_public(&name));
        }
    }

    #[test]
    fn url_normalization_is_idempotent_and_keeps_http(
        url in prop_oneof![
            "(http|https|ftp|file)://[a-z0-9.-]{1,20}(:[0-9]{1,5})?(/[a-z0-9/._-]{0,20})?(\\?[a-z=&]{0,10})?",
            "\\PC{0,40}",
        ]
    ) {
        if let Ok(normal) = normalize_url(&url) {
            prop_assert!(normal.starts_with("http://") || normal.starts_with("https://"), "{}", normal);
            prop_assert_eq!(normalize_url(&normal), Ok(normal.clone()));
        }
    }
}
