//! Property tests of the naming and routing rules (see `catalog`): for any set of
//! services and tool names, colliding or not, odd or over-long, every tool gets exactly
//! one public name, every public and qualified name routes to the tool it names, and a
//! bare name offered twice is refused as ambiguous with the qualified choices.

use std::{collections::HashMap, sync::Arc};

use gateway::{
    catalog::{Catalog, Lookup, SEPARATOR, qualify},
    registry::{normalize_url, validate_name},
    upstream::{Instance, Origin, Service, Source},
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

fn service(name: &str, tools: &[String], parent: &CancellationToken) -> Arc<Service> {
    let options = gateway::Config::default().upstream_options();
    let service = Service::new(name, &options, None);
    let instance = Instance::new(
        name,
        &format!("http://127.0.0.1:1/{name}"),
        1,
        Origin {
            source: Source::Config,
            registered_at_ms: 0,
            owner: None,
            auth: None,
        },
        tools.iter().map(|t| tool(t)).collect(),
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
        1 => prop::sample::select(vec!["s1", "s2"]).prop_map(String::from),
        3 => "[a-z0-9][a-z0-9-]{0,12}(_[a-z0-9]{1,4})?",
    ]
    .prop_filter("registry-valid", |n| validate_name(n).is_ok())
}

/// Tool names from a small pool (so collisions are common) or anything at all.
fn tool_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec!["get", "list", "search", "getProductById", "a-b", "x_y", "s1__get"])
            .prop_map(String::from),
        1 => "[a-zA-Z0-9_./ -]{1,90}",
    ]
}

fn services() -> impl Strategy<Value = Vec<(String, Vec<String>)>> {
    prop::collection::btree_map(
        service_name(),
        prop::collection::vec(tool_name(), 0..8),
        1..6,
    )
    .prop_map(|m| m.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_tool_has_one_public_name_and_every_name_routes_to_its_tool(spec in services()) {
        let parent = CancellationToken::new();
        let upstreams: Vec<Arc<Service>> =
            spec.iter().map(|(name, tools)| service(name, tools, &parent)).collect();
        let catalog = Catalog::build(&upstreams);

        // Who offers each bare name (an upstream listing a name twice counts once).
        let mut offered_by: HashMap<&str, Vec<&str>> = HashMap::new();
        let mut pairs = Vec::new();
        for (svc, tools) in &spec {
            let mut seen = std::collections::HashSet::new();
            for t in tools {
                if seen.insert(t.as_str()) {
                    offered_by.entry(t).or_default().push(svc);
                    pairs.push((svc.as_str(), t.as_str()));
                }
            }
        }

        // One public entry per distinct (service, tool), and public names are unique.
        let public: Vec<&str> = catalog.tools().iter().map(|t| t.name.as_ref()).collect();
        prop_assert_eq!(public.len(), pairs.len());
        let unique: std::collections::HashSet<&str> = public.iter().copied().collect();
        prop_assert_eq!(unique.len(), public.len(), "duplicate public names: {:?}", public);

        // Every public name routes to exactly one (service, tool), and each pair has one.
        let mut public_of: HashMap<(&str, &str), &str> = HashMap::new();
        for name in &public {
            match catalog.lookup(name) {
                Lookup::Found(route) => {
                    let pair = pairs
                        .iter()
                        .find(|(s, t)| *s == &*route.service.name && *t == &*route.original)
                        .copied();
                    prop_assert!(pair.is_some(), "{} routes to an unknown tool", name);
                    let previous = public_of.insert(pair.unwrap_or_default(), name);
                    prop_assert!(previous.is_none(), "two public names for one tool: {}", name);
                }
                _ => prop_assert!(false, "public name {} does not route", name),
            }
        }
        prop_assert_eq!(public_of.len(), pairs.len());

        for (svc, original) in &pairs {
            let qualified = qualify(svc, original);
            prop_assert!(valid_public(&qualified), "{}", qualified);
            let listed = public_of[&(*svc, *original)];
            if offered_by[original].len() == 1 {
                // Offered once: listed under its own name.
                prop_assert_eq!(listed, *original);
            } else {
                // Colliding: qualified (or, if that is some tool's own name, a variant of
                // it), valid, and one of the choices the bare name offers.
                prop_assert!(valid_public(listed), "{}", listed);
                let base = qualified.get(..qualified.len().min(60)).unwrap_or(&qualified);
                prop_assert!(listed == qualified || listed.starts_with(base), "{} for {}", listed, qualified);
                if !public.contains(original) {
                    match catalog.lookup(original) {
                        Lookup::Ambiguous(choices) => {
                            prop_assert!(choices.iter().any(|c| c == listed), "{:?}", choices);
                            prop_assert_eq!(choices.len(), offered_by[original].len());
                        }
                        _ => prop_assert!(false, "{} should be ambiguous", original),
                    }
                }
            }
            // The qualified form leads here too, unless it is another tool's public name
            // or a bare name several services offer.
            let shadowed = public.contains(&qualified.as_str())
                || offered_by.get(qualified.as_str()).is_some_and(|o| o.len() > 1);
            if !shadowed {
                match catalog.lookup(&qualified) {
                    Lookup::Found(route) => {
                        prop_assert_eq!(&*route.service.name, *svc, "{}", qualified);
                        prop_assert_eq!(&*route.original, *original, "{}", qualified);
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
    fn accepted_service_names_cannot_hide_the_separator(name in "\\PC{0,70}") {
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
