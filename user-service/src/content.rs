//! The directory's resources, prompts and completions, beside its tools: a user's
//! profile and preferences as resource templates (`users://{userId}/profile`,
//! `users://{userId}/preferences`), the prompts `summarise_user` and `find_users`, and
//! completions of their arguments and of the templates' `userId` (user ids, membership
//! tiers and countries drawn from the directory).
//!
//! The directory does not change while the service runs, so nothing here can be
//! subscribed to: the capabilities say `resources` without `subscribe`. (Baskets and
//! orders, which do change, are shopping-service's.)
//!
//! Invariant: a resource reads the same record as the tool that shows it (`getUserById`,
//! `getUserPreferences`), from [`crate::data`]; an id names a user only in its canonical
//! spelling, exactly as for the tools.

use std::sync::LazyLock;

use rmcp::{
    ErrorData,
    model::{
        CompleteRequestParams, CompleteResult, ContentBlock, GetPromptResult, JsonObject, Prompt,
        PromptArgument, PromptMessage, ReadResourceResult, Reference, ResourceTemplate, Role,
    },
};
use serde_json::{Value, json};
use service_kit::{
    mcp::{JSON_MIME, completion, json_contents, json_resource, resource_not_found},
    tool_args,
};

use crate::data::{self, Tier, User};

pub const PROFILE_TEMPLATE: &str = "users://{userId}/profile";
pub const PREFERENCES_TEMPLATE: &str = "users://{userId}/preferences";

pub const SUMMARISE_PROMPT: &str = "summarise_user";
pub const FIND_PROMPT: &str = "find_users";

/// The URI of a user's profile.
pub fn profile_uri(user_id: &str) -> String {
    format!("users://{user_id}/profile")
}

/// The URI of a user's preferences.
pub fn preferences_uri(user_id: &str) -> String {
    format!("users://{user_id}/preferences")
}

/// The resource templates, in the order `resources/templates/list` shows them.
pub fn resource_templates() -> Vec<ResourceTemplate> {
    vec![
        ResourceTemplate::new(PROFILE_TEMPLATE, "profile")
            .with_title("User profile")
            .with_description(
                "A user's record by id (\"1\" to \"500\"): name, email, city, country, join \
                 date, membership tier and shopping preferences (what getUserById returns).",
            )
            .with_mime_type(JSON_MIME),
        ResourceTemplate::new(PREFERENCES_TEMPLATE, "preferences")
            .with_title("User preferences")
            .with_description(
                "What a user likes to buy: favourite categories, preferred brands, price range \
                 and newsletter opt-in (what getUserPreferences returns).",
            )
            .with_mime_type(JSON_MIME),
    ]
}

/// `resources/read`: the user's profile or preferences, or resource-not-found (-32002)
/// for an unknown user or URI.
pub fn read(uri: &str) -> Result<ReadResourceResult, ErrorData> {
    let Some((id, what)) = uri
        .strip_prefix("users://")
        .and_then(|rest| rest.split_once('/'))
    else {
        return Err(resource_not_found(uri, "not a resource of this directory"));
    };
    let user = data::user_by_id(id)
        .ok_or_else(|| resource_not_found(uri, &format!("no user with id {id:?}")))?;
    match what {
        "profile" => Ok(json_resource(uri, &profile(user))),
        "preferences" => Ok(json_resource(uri, &preferences(user))),
        _ => Err(resource_not_found(
            uri,
            "a user has a profile and preferences only",
        )),
    }
}

fn profile(user: &User) -> Value {
    serde_json::to_value(user).unwrap_or_default()
}

/// The document `getUserPreferences` returns.
fn preferences(user: &User) -> Value {
    let mut value = json!({ "userId": user.id });
    if let (Value::Object(map), Ok(Value::Object(prefs))) =
        (&mut value, serde_json::to_value(&user.preferences))
    {
        map.extend(prefs);
    }
    value
}

// ---------------------------------------------------------------------------------------
// Prompts
// ---------------------------------------------------------------------------------------

/// The prompts, in the order `prompts/list` shows them.
pub fn prompts() -> Vec<Prompt> {
    vec![
        Prompt::new(
            SUMMARISE_PROMPT,
            Some(
                "Summarise a user for a shop assistant: the user's profile is attached, and \
                 the assistant is asked who they are, what they like and what to offer them.",
            ),
            Some(vec![
                PromptArgument::new("userId")
                    .with_title("User id")
                    .with_description("The user to summarise, e.g. \"456\".")
                    .with_required(true),
            ]),
        )
        .with_title("Summarise user"),
        Prompt::new(
            FIND_PROMPT,
            Some(
                "Find users by membership tier and/or country: asks the assistant to page \
                 through listUsers with those filters and describe who it found.",
            ),
            Some(vec![
                PromptArgument::new("tier")
                    .with_title("Membership tier")
                    .with_description("bronze, silver, gold or platinum.")
                    .with_required(false),
                PromptArgument::new("country")
                    .with_title("Country")
                    .with_description("A country users live in, e.g. \"Germany\".")
                    .with_required(false),
            ]),
        )
        .with_title("Find users"),
    ]
}

/// `prompts/get`: an unknown prompt or a missing or bad argument is invalid params.
pub fn prompt(name: &str, arguments: Option<&JsonObject>) -> Result<GetPromptResult, ErrorData> {
    let argument = |key: &str| -> Result<Option<&str>, ErrorData> {
        match arguments.and_then(|a| a.get(key)) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim())),
            Some(other) => Err(invalid(tool_args::wrong_type(key, "a string", other))),
        }
    };
    match name {
        SUMMARISE_PROMPT => {
            let id = argument("userId")?.ok_or_else(|| invalid(tool_args::missing("userId")))?;
            let user =
                data::user_by_id(id).ok_or_else(|| invalid(format!("no user with id {id:?}")))?;
            let text = format!(
                "Summarise user {id} of the demo shop for a shop assistant, from their profile \
                 attached below: who they are (name, city, country, member since, tier), what \
                 they like to buy (categories, brands, price range) and two or three kinds of \
                 product to offer them. Three short sentences at most."
            );
            Ok(GetPromptResult::new(vec![
                PromptMessage::new_text(Role::User, text),
                PromptMessage::new(
                    Role::User,
                    ContentBlock::resource(json_contents(&profile_uri(id), &profile(user))),
                ),
            ])
            .with_description(format!("Summary of user {id} ({})", user.name)))
        }
        FIND_PROMPT => {
            let tier = match argument("tier")? {
                None => None,
                Some(t) => Some(Tier::parse(&t.to_ascii_lowercase()).ok_or_else(|| {
                    invalid(tool_args::one_of(
                        "tier",
                        &Tier::ALL.map(Tier::as_str),
                        format_args!("{t:?}"),
                    ))
                })?),
            };
            let country = match argument("country")? {
                None => None,
                Some(c) => Some(
                    countries()
                        .find(|known| known.eq_ignore_ascii_case(c))
                        .ok_or_else(|| {
                            invalid(format!(
                                "argument \"country\": no user lives in {c:?}; one of {}",
                                countries().collect::<Vec<_>>().join(", ")
                            ))
                        })?,
                ),
            };
            let mut filter = serde_json::Map::new();
            if let Some(t) = tier {
                filter.insert("tier".into(), json!(t.as_str()));
            }
            if let Some(c) = country {
                filter.insert("country".into(), json!(c));
            }
            let who = match (tier, country) {
                (None, None) => "all users".to_string(),
                (Some(t), None) => format!("{} members", t.as_str()),
                (None, Some(c)) => format!("users in {c}"),
                (Some(t), Some(c)) => format!("{} members in {c}", t.as_str()),
            };
            let text = format!(
                "Find {who} of the demo shop: call the tool listUsers with the arguments \
                 {} (page with offset and limit until you have them all), then say how many \
                 there are, which cities they live in, and which product categories they \
                 favour most.",
                Value::Object(filter)
            );
            Ok(
                GetPromptResult::new(vec![PromptMessage::new_text(Role::User, text)])
                    .with_description(format!("Find {who}")),
            )
        }
        _ => Err(ErrorData::invalid_params(
            format!("unknown prompt \"{name}\""),
            Some(json!({"prompt": name})),
        )),
    }
}

fn invalid(message: String) -> ErrorData {
    ErrorData::invalid_params(message, None)
}

// ---------------------------------------------------------------------------------------
// Completions
// ---------------------------------------------------------------------------------------

/// The countries users live in, sorted.
static COUNTRIES: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    let mut countries: Vec<&'static str> = data::users().iter().map(|u| u.country).collect();
    countries.sort_unstable();
    countries.dedup();
    countries
});

fn countries() -> impl Iterator<Item = &'static str> {
    COUNTRIES.iter().copied()
}

fn user_ids() -> impl Iterator<Item = &'static str> {
    data::users().iter().map(|u| u.id.as_str())
}

/// `completion/complete` for the prompts' arguments and the templates' `userId`. An
/// unknown prompt or template is invalid params; an argument without completions gets
/// none.
pub fn complete(request: &CompleteRequestParams) -> Result<CompleteResult, ErrorData> {
    let argument = request.argument.name.as_str();
    let value = request.argument.value.as_str();
    match &request.r#ref {
        Reference::Prompt(p) => match (p.name.as_str(), argument) {
            (SUMMARISE_PROMPT, "userId") => Ok(completion(user_ids(), value)),
            (FIND_PROMPT, "tier") => Ok(completion(Tier::ALL.map(Tier::as_str), value)),
            (FIND_PROMPT, "country") => Ok(completion(countries(), value)),
            (SUMMARISE_PROMPT | FIND_PROMPT, _) => Ok(completion([], value)),
            (name, _) => Err(invalid(format!("unknown prompt \"{name}\""))),
        },
        Reference::Resource(r) => match (r.uri.as_str(), argument) {
            (PROFILE_TEMPLATE | PREFERENCES_TEMPLATE, "userId") => {
                Ok(completion(user_ids(), value))
            }
            (PROFILE_TEMPLATE | PREFERENCES_TEMPLATE, _) => Ok(completion([], value)),
            (uri, _) => Err(invalid(format!("no resource template \"{uri}\""))),
        },
        _ => Ok(completion([], value)),
    }
}

#[cfg(test)]
mod tests {
    use rmcp::model::{ArgumentInfo, ErrorCode, ResourceContents};

    use super::*;

    fn read_json(uri: &str) -> Value {
        let result = read(uri).expect(uri);
        let ResourceContents::TextResourceContents {
            text, mime_type, ..
        } = &result.contents[0]
        else {
            panic!("text contents")
        };
        assert_eq!(mime_type.as_deref(), Some("application/json"));
        serde_json::from_str(text).expect("JSON")
    }

    #[test]
    fn resources_read_what_the_tools_show() {
        let user = data::user_by_id("456").expect("user 456");
        assert_eq!(
            read_json("users://456/profile"),
            serde_json::to_value(user).expect("json")
        );
        let tool = crate::tools::call("getUserPreferences", json!({"id": "456"}).as_object())
            .expect("tool");
        assert_eq!(
            Some(read_json("users://456/preferences")),
            tool.structured_content
        );
        for bad in [
            "users://0456/profile",
            "users://501/profile",
            "users://456/orders",
            "users://456",
            "ecommerce://products/1",
        ] {
            let e = read(bad).expect_err(bad);
            assert_eq!(e.code, ErrorCode::RESOURCE_NOT_FOUND, "{bad}");
            assert!(e.message.contains(bad), "{}", e.message);
        }
    }

    #[test]
    fn prompts_check_their_arguments() {
        let args = |v: Value| v.as_object().cloned().expect("object");
        let r = prompt(SUMMARISE_PROMPT, Some(&args(json!({"userId": "456"})))).expect("prompt");
        assert!(r.messages[1].content.as_resource().is_some());
        let r = prompt(
            FIND_PROMPT,
            Some(&args(json!({"tier": "Gold", "country": "germany"}))),
        )
        .expect("prompt");
        let text = r.messages[0].content.as_text().expect("text").text.clone();
        assert!(
            text.contains(r#"{"tier":"gold","country":"Germany"}"#),
            "{text}"
        );
        for (name, a, says) in [
            (SUMMARISE_PROMPT, json!({}), "missing required argument"),
            (
                SUMMARISE_PROMPT,
                json!({"userId": "999"}),
                "no user with id",
            ),
            (FIND_PROMPT, json!({"tier": "diamond"}), "must be one of"),
            (
                FIND_PROMPT,
                json!({"country": "Atlantis"}),
                "no user lives in",
            ),
            ("nope", json!({}), "unknown prompt"),
        ] {
            let e = prompt(name, Some(&args(a))).expect_err(name);
            assert_eq!(e.code, ErrorCode::INVALID_PARAMS);
            assert!(e.message.contains(says), "{}", e.message);
        }
    }

    #[test]
    fn completions_come_from_the_directory() {
        let ask = |r: Reference, name: &str, value: &str| {
            complete(&CompleteRequestParams::new(
                r,
                ArgumentInfo::new(name, value),
            ))
        };
        let c = ask(Reference::for_resource(PROFILE_TEMPLATE), "userId", "45")
            .expect("completion")
            .completion;
        assert_eq!(c.values[..2], ["45", "450"]);
        assert_eq!(c.total, Some(11));
        let c = ask(Reference::for_prompt(FIND_PROMPT), "tier", "p")
            .expect("completion")
            .completion;
        assert_eq!(c.values, ["platinum"]);
        let c = ask(Reference::for_prompt(FIND_PROMPT), "country", "ger")
            .expect("completion")
            .completion;
        assert_eq!(c.values, ["Germany"]);
        assert!(ask(Reference::for_prompt("nope"), "userId", "").is_err());
    }
}
