//! Template validation, rendering and narrowing.
use super::*;
use proptest::prelude::*;
use serde_json::json;

fn bucket() -> CosResource {
    CosResource::new("ap-guangzhou", "examplebucket-1250000000").unwrap()
}

const BASE: &str = "qcs::cos:ap-guangzhou:uid/1250000000:examplebucket-1250000000/";

fn claims(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    v.as_object().unwrap().clone()
}

fn render_for(doc: &TemplateDocument, sub: &str) -> Result<RenderedPolicy, RenderError> {
    let c = serde_json::Map::new();
    doc.render(
        &RenderContext {
            app: "demo",
            subject: sub,
            claims: &c,
        },
        &bucket(),
    )
}

fn doc(statements: serde_json::Value) -> TemplateDocument {
    serde_json::from_value(json!({ "statements": statements })).unwrap()
}

fn field_errors(d: &TemplateDocument) -> Vec<String> {
    d.validate()
        .err()
        .unwrap_or_default()
        .into_iter()
        .map(|e| e.field)
        .collect()
}

/// One statement, marked shared so that only the pattern's own rules apply.
fn one_resource(r: &str) -> TemplateDocument {
    doc(json!([{
        "effect": "allow", "actions": ["name/cos:GetObject"], "resources": [r],
        "shared": {"reason": "test"}
    }]))
}

fn resource_error(r: &str) -> String {
    one_resource(r)
        .validate()
        .unwrap_err()
        .into_iter()
        .find(|e| e.field == "statements[0].resources[0]")
        .map(|e| e.message)
        .unwrap_or_else(|| panic!("{r} was not refused"))
}

#[test]
fn default_template_renders_the_users_prefix() {
    let d = TemplateDocument::default_for_users();
    d.validate().unwrap();
    assert_eq!(d.home_prefix_template(), "users/${sub}/");
    let r = render_for(&d, "alice").unwrap();
    assert_eq!(r.prefix, "users/alice/");
    assert_eq!(
        r.policy.statement[0].resource,
        [format!("{BASE}users/alice/*")]
    );
    assert!(r.policy.statement[0].principal.is_none());
    assert_eq!(r.actions.len(), 9);
    assert!(r.actions.windows(2).all(|w| w[0] < w[1]));
    assert!(r.actions.contains(&"name/cos:PutObject".to_owned()));
    assert_eq!(
        r.policy_hash,
        hex::encode(Sha256::digest(r.policy.to_json().as_bytes()))
    );
    // Deterministic.
    assert_eq!(r.policy_hash, render_for(&d, "alice").unwrap().policy_hash);
    assert_ne!(r.policy_hash, render_for(&d, "bob").unwrap().policy_hash);
}

#[test]
fn serde_shape() {
    let d = TemplateDocument::default_for_users();
    let v = serde_json::to_value(&d).unwrap();
    assert_eq!(v["prefix"], "users/${sub}/");
    assert_eq!(v["statements"][0]["effect"], "allow");
    assert!(v["statements"][0].get("conditions").is_none());
    let back: TemplateDocument = serde_json::from_value(v).unwrap();
    assert_eq!(back, d);
    let no_prefix: TemplateDocument = serde_json::from_value(json!({"statements": []})).unwrap();
    assert_eq!(no_prefix.prefix, "");
}

#[test]
fn variables_render() {
    let d = doc(json!([{
        "effect": "allow",
        "actions": ["cos:GetObject", "name/cos:GetObject"],
        "resources": ["t/${claim.tenant}/${sub}/*", "h/${sub_hash}/*", "a/${app}/x", "/"],
        "conditions": {"string_equal": {"cos:x-cos-acl": ["private", "${claim.tenant}"]}},
        "shared": {"reason": "test: every variable"}
    }]));
    d.validate().unwrap();
    let c = claims(json!({"tenant": 42}));
    let r = d
        .render(
            &RenderContext {
                app: "demo",
                subject: "alice",
                claims: &c,
            },
            &bucket(),
        )
        .unwrap();
    let st = &r.policy.statement[0];
    assert_eq!(st.action, ["name/cos:GetObject"]);
    let h = &hex::encode(Sha256::digest(b"alice"))[..32];
    assert_eq!(
        st.resource,
        [
            format!("{BASE}t/42/alice/*"),
            format!("{BASE}h/{h}/*"),
            format!("{BASE}a/demo/x"),
            BASE.to_owned(),
        ]
    );
    assert_eq!(
        st.condition["string_equal"]["cos:x-cos-acl"],
        json!(["private", "42"])
    );
    assert_eq!(r.prefix, "t/42/alice/");
}

#[test]
fn claims_must_exist_and_be_scalars() {
    let d = one_resource("t/${claim.org.id}/*");
    d.validate().unwrap();
    let render = |c: serde_json::Value| {
        let c = claims(c);
        d.render(
            &RenderContext {
                app: "demo",
                subject: "alice",
                claims: &c,
            },
            &bucket(),
        )
    };
    assert_eq!(
        render(json!({})).unwrap_err(),
        RenderError::MissingClaim("org.id".into())
    );
    assert_eq!(
        render(json!({"org.id": null})).unwrap_err(),
        RenderError::MissingClaim("org.id".into())
    );
    assert!(render(json!({"org": {"id": "x1"}})).is_ok());
    assert!(render(json!({"org.id": "x1"})).is_ok());
    for bad in [
        json!(1.5),
        json!(true),
        json!(["a"]),
        json!({"a": 1}),
        json!("a/b"),
    ] {
        assert!(
            matches!(
                render(json!({ "org.id": bad })),
                Err(RenderError::ForbiddenValue { .. })
            ),
            "{bad}"
        );
    }
}

#[test]
fn forbidden_value_message_names_sub_hash_and_hides_the_value() {
    let d = TemplateDocument::default_for_users();
    let hostile = "../../<script>alert(1)</script>";
    let err = render_for(&d, hostile).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("${sub_hash}"), "{msg}");
    assert!(msg.contains("${sub}"), "{msg}");
    assert!(!msg.contains("script"), "{msg}");
    let msg = render_for(&d, &"a".repeat(200)).unwrap_err().to_string();
    assert!(msg.contains("200 characters"), "{msg}");
    assert!(!msg.contains(&"a".repeat(20)));
    // Only variables that are used are checked.
    let hashed = one_resource("h/${sub_hash}/*");
    let r = render_for(&hashed, "any thing/../é*").unwrap();
    assert!(r.policy.statement[0].resource[0].starts_with(&format!("{BASE}h/")));
}

#[test]
fn refused_resources() {
    assert!(resource_error("qcs::cos:ap-guangzhou:uid/1:b-1/x").contains("key pattern"));
    assert!(resource_error("/users/*").contains("remove the leading /"));
    assert!(resource_error("users/*/x").contains("last character"));
    assert!(resource_error("users/../x/*").contains(". or .."));
    assert!(resource_error("users/./x/*").contains(". or .."));
    assert!(resource_error("users//x/*").contains("//"));
    assert!(resource_error("users/${nope}/*").contains("there is no variable"));
    assert!(resource_error("users/${sub/*").contains("close the variable"));
    assert!(resource_error("users/$sub/*").contains("variable"));
    assert!(resource_error("users/${claim.}/*").contains("claim name"));
    let m = resource_error("users/${sub}*");
    assert!(m.contains("user10/"), "{m}");
    assert!(resource_error("users/${sub}").contains("put a / right after ${sub}"));
    assert!(resource_error("users/${sub}-x/*").contains("put a / right after"));
    assert!(resource_error("").contains("write a pattern"));
    // Accepted forms.
    for ok in [
        "/",
        "*",
        "users/${sub}/*",
        "shared/readme.txt",
        "u/${sub}/${claim.d}/",
        "x/",
    ] {
        one_resource(ok)
            .validate()
            .unwrap_or_else(|e| panic!("{ok}: {e:?}"));
    }
}

#[test]
fn refused_prefix_actions_statements_conditions() {
    let mut d = TemplateDocument::default_for_users();
    for (p, needle) in [
        ("users/${sub}/x", "end the home prefix with /"),
        ("users/*/", "remove the *"),
        ("/users/${sub}/", "remove the leading /"),
        ("users/${sub}x/", "right after ${sub}"),
    ] {
        d.prefix = p.into();
        let errs = d.validate().unwrap_err();
        assert_eq!(errs[0].field, "prefix", "{p}");
        assert!(errs[0].message.contains(needle), "{p}: {}", errs[0].message);
    }

    let d = doc(
        json!([{ "effect": "allow", "actions": ["*", "s3:GetObject", "name/cos:Get_Object", "cos:*"], "resources": ["users/${sub}/*"] }]),
    );
    let errs = d.validate().unwrap_err();
    assert_eq!(
        errs.iter().map(|e| e.field.as_str()).collect::<Vec<_>>(),
        [
            "statements[0].actions[0]",
            "statements[0].actions[1]",
            "statements[0].actions[2]"
        ]
    );
    assert!(errs[0].message.contains("name/cos:*"));

    assert_eq!(field_errors(&doc(json!([]))), ["statements"]);
    assert_eq!(
        field_errors(&doc(
            json!([{ "effect": "deny", "actions": ["name/cos:GetObject"], "resources": ["x/*"] }])
        )),
        ["statements"]
    );
    assert_eq!(
        field_errors(&doc(
            json!([{ "effect": "allow", "actions": [], "resources": [] }])
        )),
        ["statements[0].actions", "statements[0].resources"]
    );

    let d = doc(json!([
        { "effect": "allow", "actions": ["name/cos:GetObject"], "resources": ["users/${sub}/*"] },
        { "effect": "deny", "actions": ["name/cos:PutObject"], "resources": ["x/*"], "conditions": {
            "string_like": { "cos:prefix": "users/${sub}*" },
            "string_equal": { "cos:x": "${sub}", "cos:y": [{"a": 1}], "cos:z": [["a"]] },
            "weird_op": { "k": "v" },
            "for_any_value:string_equal_if_exist": { "k": ["a", 1, true] },
            "numeric_less_than_equal": { "cos:content-length": 5242880 },
            "string_like_if_exist": { "cos:content-type": "image/*" }
        }}
    ]));
    assert_eq!(
        field_errors(&d),
        [
            "statements[1].conditions.string_equal.cos:y[0]",
            "statements[1].conditions.string_equal.cos:z[0]",
            "statements[1].conditions.string_like.cos:prefix",
            "statements[1].conditions.weird_op",
        ]
    );
}

#[test]
fn length_is_checked_for_the_worst_case_user() {
    // Fits for "alice" but not for a 128-character user name.
    let resources: Vec<String> = (0..30).map(|i| format!("r{i}/${{sub}}/*")).collect();
    let d = doc(json!([{
        "effect": "allow", "actions": ["name/cos:GetObject"], "resources": resources,
        "shared": {"reason": "test"}
    }]));
    assert!(render_for(&d, "alice").is_ok());
    let errs = d.validate().unwrap_err();
    assert_eq!(errs[0].field, "statements");
    assert!(errs[0].message.contains("4096"), "{}", errs[0].message);
    assert!(matches!(
        render_for(&d, &"a".repeat(128)),
        Err(RenderError::TooLong(_))
    ));
}

fn upload_and_list() -> RenderedPolicy {
    let d = doc(json!([
        { "effect": "allow", "actions": ["name/cos:PutObject", "name/cos:GetObject", "name/cos:List*"], "resources": ["users/${sub}/*"] },
        { "effect": "allow", "actions": ["name/cos:GetBucket"], "resources": ["/"],
          "shared": {"reason": "test: list the whole bucket"} },
        { "effect": "allow", "actions": ["name/cos:GetObject"], "resources": ["shared/*", "users/${sub}/profile.json"],
          "shared": {"reason": "test: a shared folder"} },
        { "effect": "deny", "actions": ["name/cos:DeleteObject"], "resources": ["users/${sub}/locked/*"] }
    ]));
    d.validate().unwrap();
    render_for(&d, "alice").unwrap()
}

#[test]
fn narrow_actions() {
    let r = upload_and_list();
    let n = r
        .narrow(
            Some(&["PutObject".into(), "cos:ListParts".into()]),
            None,
            &bucket(),
        )
        .unwrap();
    assert_eq!(n.actions, ["name/cos:ListParts", "name/cos:PutObject"]);
    assert_eq!(n.policy.statement.len(), 2); // first allow + deny
    assert_eq!(
        n.policy.statement[0].action,
        ["name/cos:PutObject", "name/cos:ListParts"]
    );
    assert_eq!(n.policy.statement[1].effect, Effect::Deny);
    assert_ne!(n.policy_hash, r.policy_hash);
    assert_eq!(n.prefix, r.prefix);

    assert_eq!(
        r.narrow(Some(&["name/cos:DeleteObject".into()]), None, &bucket())
            .unwrap_err(),
        NarrowError::ActionNotGranted("name/cos:DeleteObject".into())
    );
    assert!(matches!(
        r.narrow(Some(&["name/cos:*".into()]), None, &bucket()),
        Err(NarrowError::ActionNotGranted(_))
    ));
    assert!(matches!(
        r.narrow(Some(&["name/cos:Put/../x".into()]), None, &bucket()),
        Err(NarrowError::ActionNotGranted(_))
    ));
    // GetObject is granted by two statements; both keep it.
    let n = r
        .narrow(Some(&["name/cos:GetObject".into()]), None, &bucket())
        .unwrap();
    assert_eq!(n.policy.statement.len(), 3);
    // No narrowing.
    assert_eq!(r.narrow(None, None, &bucket()).unwrap(), r);
    assert_eq!(r.narrow(Some(&[]), None, &bucket()).unwrap(), r);
}

#[test]
fn narrow_prefix() {
    let r = upload_and_list();
    for requested in [
        "photos/2024",
        "photos/2024/",
        "/photos/2024/",
        "users/alice/photos/2024/",
    ] {
        let n = r.narrow(None, Some(requested), &bucket()).unwrap();
        assert_eq!(n.prefix, "users/alice/photos/2024/", "{requested}");
        assert_eq!(
            n.policy.statement[0].resource,
            [format!("{BASE}users/alice/photos/2024/*")]
        );
        // Bucket-level kept.
        assert_eq!(n.policy.statement[1].resource, [BASE.to_owned()]);
        // shared/* and the exact profile key are outside the new home: statement dropped.
        assert_eq!(n.policy.statement.len(), 3);
        // The deny statement is untouched.
        assert_eq!(n.policy.statement[2], r.policy.statement[3]);
    }
    // A narrower template resource inside the new home is kept as is.
    let n = r.narrow(None, Some("locked"), &bucket()).unwrap();
    assert_eq!(n.prefix, "users/alice/locked/");
    let home = r.narrow(None, Some("users/alice/"), &bucket()).unwrap();
    assert_eq!(home.prefix, "users/alice/");
    assert_eq!(
        home.policy.statement[2].resource,
        [format!("{BASE}users/alice/profile.json")]
    );

    for bad in [
        "a/../b",
        "a/./b",
        "a//b",
        "a/*",
        "a?",
        "é",
        "a\nb",
        "a b",
        "a/%2e%2e/",
        "a/${sub}/",
    ] {
        assert!(
            matches!(
                r.narrow(None, Some(bad), &bucket()),
                Err(NarrowError::BadPrefix(_))
            ),
            "{bad:?}"
        );
    }
    let long = "a/".repeat(300);
    assert!(matches!(
        r.narrow(None, Some(&long), &bucket()),
        Err(NarrowError::BadPrefix(_))
    ));
    // Other users' prefixes are only reachable as sub-paths of one's own.
    let n = r.narrow(None, Some("users/bob/"), &bucket()).unwrap();
    assert_eq!(n.prefix, "users/alice/users/bob/");
}

#[test]
fn narrow_with_a_derived_or_no_home() {
    // The home is derived from the first `/*` resource.
    let r = render_for(&one_resource("shared/*"), "alice").unwrap();
    assert_eq!(r.prefix, "shared/");
    let n = r.narrow(None, Some("docs"), &bucket()).unwrap();
    assert_eq!(n.prefix, "shared/docs/");
    assert_eq!(
        n.policy.statement[0].resource,
        [format!("{BASE}shared/docs/*")]
    );
    // No home at all: the sub-prefix starts at the bucket root.
    let r = render_for(&one_resource("shared/readme.txt"), "alice").unwrap();
    assert_eq!(r.prefix, "");
    let n = r.narrow(None, Some("shared"), &bucket()).unwrap();
    assert_eq!(
        n.policy.statement[0].resource,
        [format!("{BASE}shared/readme.txt")]
    );
    assert_eq!(
        r.narrow(None, Some("private"), &bucket()).unwrap_err(),
        NarrowError::NothingLeft
    );
}

// -----------------------------------------------------------------------------------------
// Properties

fn forbidden_char() -> impl Strategy<Value = char> {
    prop_oneof![
        Just('/'),
        Just('*'),
        Just('$'),
        Just('{'),
        Just('}'),
        Just('?'),
        Just(' '),
        Just('\\'),
        Just('%'),
        Just('#'),
        (0u32..0x20).prop_map(|c| char::from_u32(c).unwrap()),
        Just('\u{7f}'),
        any::<char>().prop_filter("non-ASCII", |c| !c.is_ascii()),
    ]
}

/// What `narrow_never_widens`' template must do with these options: `Some(true)` succeed,
/// `Some(false)` refuse, `None` either (only GetObject asked for, under a prefix that may
/// leave none of its statements).
fn narrow_must_succeed(actions: &[String], sub: Option<&str>) -> Option<bool> {
    let granted = |a: &str| {
        matches!(
            a,
            "PutObject" | "name/cos:GetObject" | "cos:ListParts" | "name/cos:List*"
        )
    };
    if !actions.iter().all(|a| granted(a)) {
        return Some(false);
    }
    let relative = sub.map(|s| {
        let s = s.trim_start_matches('/');
        s.strip_suffix('/').unwrap_or(s)
    });
    if let Some(r) = relative
        && !r.is_empty()
        && !r
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != ".." && !seg.contains('*'))
    {
        return Some(false);
    }
    // The first statement (PutObject, List*) covers the whole home; GetObject's do not.
    let whole_home = actions.is_empty() || actions.iter().any(|a| a != "name/cos:GetObject");
    (whole_home || relative.is_none_or(str::is_empty)).then_some(true)
}

fn valid_subject() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._@=+|-]{1,128}".prop_filter("not . or ..", |s| s != "." && s != "..")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn subjects_with_forbidden_characters_are_refused(
        head in "[A-Za-z0-9._-]{0,20}",
        bad in forbidden_char(),
        tail in "[A-Za-z0-9._-]{0,20}",
    ) {
        let subject = format!("{head}{bad}{tail}");
        let d = TemplateDocument::default_for_users();
        let is_forbidden = matches!(
            render_for(&d, &subject),
            Err(RenderError::ForbiddenValue { .. })
        );
        prop_assert!(is_forbidden);
    }

    #[test]
    fn dot_subjects_are_refused(dots in prop_oneof![Just("."), Just("..")]) {
        let d = TemplateDocument::default_for_users();
        let is_forbidden = matches!(render_for(&d, dots), Err(RenderError::ForbiddenValue { .. }));
        prop_assert!(is_forbidden);
    }

    #[test]
    fn valid_subjects_stay_in_their_prefix(subject in valid_subject()) {
        let d = doc(json!([
            { "effect": "allow", "actions": ["name/cos:PutObject"], "resources": ["users/${sub}/*", "users/${sub}/a/b.txt"] },
            { "effect": "allow", "actions": ["name/cos:GetObject"], "resources": ["users/${sub}/in/*"] }
        ]));
        let r = render_for(&d, &subject).unwrap();
        let home = format!("{BASE}users/{subject}/");
        for st in &r.policy.statement {
            for res in &st.resource {
                prop_assert!(res.starts_with(&home), "{} outside {}", res, home);
            }
        }
        prop_assert_eq!(r.prefix, format!("users/{subject}/"));
    }

    #[test]
    fn narrow_never_widens(
        subject in valid_subject(),
        actions in proptest::collection::vec(
            prop_oneof![
                Just("PutObject".to_owned()),
                Just("name/cos:GetObject".to_owned()),
                Just("cos:ListParts".to_owned()),
                Just("DeleteObject".to_owned()),
                Just("name/cos:List*".to_owned()),
                Just("*".to_owned()),
            ],
            0..4,
        ),
        sub in proptest::option::of("[A-Za-z0-9./*_-]{0,30}"),
    ) {
        let d = doc(json!([
            { "effect": "allow", "actions": ["name/cos:PutObject", "name/cos:List*"], "resources": ["users/${sub}/*", "/"] },
            { "effect": "allow", "actions": ["name/cos:GetObject"], "resources": ["users/${sub}/pub/*", "shared/*"] },
            { "effect": "deny", "actions": ["name/cos:PutObject"], "resources": ["users/${sub}/ro/*"] }
        ]));
        let r = render_for(&d, &subject).unwrap();
        let original_prefixes: Vec<String> = r.policy.statement.iter()
            .flat_map(|s| s.resource.iter())
            .map(|res| res.trim_end_matches('*').to_owned())
            .collect();
        let acts = (!actions.is_empty()).then_some(actions.as_slice());
        let narrowed = r.narrow(acts, sub.as_deref(), &bucket());
        match narrow_must_succeed(&actions, sub.as_deref()) {
            Some(true) => prop_assert!(narrowed.is_ok(), "refused: {:?}", narrowed.err()),
            Some(false) => prop_assert!(narrowed.is_err(), "accepted {:?} {:?}", actions, sub),
            None => {}
        }
        if let Ok(n) = narrowed {
            for a in &n.actions {
                prop_assert!(r.actions.iter().any(|g| grants(g, a)), "{} added", a);
            }
            for st in n.policy.statement.iter().filter(|s| s.effect == Effect::Allow) {
                for a in &st.action {
                    prop_assert!(r.actions.iter().any(|g| grants(g, a)), "{} added", a);
                }
                for res in &st.resource {
                    let inside = original_prefixes.iter().any(|p| res.trim_end_matches('*').starts_with(p.as_str()));
                    prop_assert!(inside, "{} outside {:?}", res, original_prefixes);
                }
            }
            if sub.is_some() {
                prop_assert!(n.prefix.starts_with(&r.prefix));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reach: the user's own prefix, or every user

fn errors_of(d: &TemplateDocument) -> Vec<(String, String)> {
    d.validate()
        .err()
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.field, e.message))
        .collect()
}

#[test]
fn grants_beyond_the_home_prefix_need_a_shared_mark() {
    // The whole bucket, another folder, another user's hash, the bucket-level resource.
    for (resource, needle) in [
        ("*", "outside the user's home prefix users/${sub}/"),
        ("other/*", "outside the user's home prefix"),
        ("users/${sub_hash}/*", "outside the user's home prefix"),
        ("users/*", "outside the user's home prefix"),
        ("/", "the bucket itself (/) is shared by every user"),
    ] {
        let d = doc(json!([
            { "effect": "allow", "actions": ["name/cos:GetObject"], "resources": ["users/${sub}/*"] },
            { "effect": "allow", "actions": ["name/cos:GetObject"], "resources": ["users/${sub}/a", resource] }
        ]));
        let errs = errors_of(&d);
        assert_eq!(errs.len(), 1, "{resource}: {errs:?}");
        assert_eq!(errs[0].0, "statements[1].resources[1]", "{resource}");
        assert!(errs[0].1.contains(needle), "{resource}: {}", errs[0].1);
        assert!(
            errs[0].1.contains("mark the statement as shared"),
            "{}",
            errs[0].1
        );
        assert!(!errs[0].1.contains('`'), "plain words: {}", errs[0].1);
        assert_eq!(
            d.reach()[1],
            Reach::Unmarked { outside: vec![1] },
            "{resource}"
        );

        // Marked shared with a reason: saved, and reported as shared.
        let mut marked = d.clone();
        marked.statements[1].shared = Some(Shared {
            reason: "public thumbnails".into(),
        });
        marked.validate().unwrap();
        assert_eq!(
            marked.reach(),
            [
                Reach::Home,
                Reach::Shared {
                    reason: "public thumbnails".into(),
                    outside: vec![1]
                }
            ]
        );
        // The mark never reaches the rendered CAM policy.
        let r = render_for(&marked, "alice").unwrap();
        assert!(!r.policy.to_json().contains("public thumbnails"));

        // A blank or multi-line reason is refused on the mark.
        for bad in ["  ", "line\nbreak"] {
            marked.statements[1].shared = Some(Shared { reason: bad.into() });
            assert_eq!(field_errors(&marked), ["statements[1].shared"], "{bad:?}");
        }
    }
}

#[test]
fn listing_the_bucket_under_the_home_prefix_stays_home() {
    let listing = |conditions: serde_json::Value| {
        doc(json!([
            { "effect": "allow", "actions": ["name/cos:GetObject"], "resources": ["users/${sub}/*"] },
            { "effect": "allow", "actions": ["name/cos:GetBucket"], "resources": ["/"], "conditions": conditions }
        ]))
    };
    for ok in [
        json!({"string_like": {"cos:prefix": "users/${sub}/*"}}),
        json!({"string_equal": {"cos:prefix": ["users/${sub}/", "users/${sub}/photos/"]}}),
    ] {
        let d = listing(ok.clone());
        d.validate().unwrap_or_else(|e| panic!("{ok}: {e:?}"));
        assert_eq!(d.reach(), [Reach::Home, Reach::Home]);
    }
    for beyond in [
        json!({"string_like": {"cos:prefix": "users/*"}}),
        json!({"string_like": {"cos:prefix": ["users/${sub}/*", "shared/*"]}}),
        // _if_exist lets a request without a prefix list the whole bucket.
        json!({"string_like_if_exist": {"cos:prefix": "users/${sub}/*"}}),
        json!({"string_not_like": {"cos:prefix": "users/${sub}/*"}}),
        json!({"string_like": {"cos:delimiter": "/"}}),
    ] {
        let d = listing(beyond.clone());
        assert_eq!(field_errors(&d), ["statements[1].resources[0]"], "{beyond}");
    }
}

#[test]
fn the_home_prefix_must_be_per_user_and_used() {
    // A home prefix no resource is under (the "Home prefix users/alice/" beside `*`).
    let mut d = doc(json!([
        { "effect": "allow", "actions": ["name/cos:GetObject"], "resources": ["*"],
          "shared": {"reason": "a public bucket"} }
    ]));
    d.prefix = "users/${sub}/".into();
    let errs = errors_of(&d);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].0, "prefix");
    assert!(
        errs[0]
            .1
            .contains("no allow statement grants anything under this home prefix")
    );
    // Without the prefix, the shared statement alone is accepted.
    d.prefix = String::new();
    d.validate().unwrap();
    assert_eq!(d.per_user_home(), None);

    // A home that is the same for every user is refused; so is everything under it.
    let mut d = doc(json!([
        { "effect": "allow", "actions": ["name/cos:GetObject"], "resources": ["shared/${app}/*"] }
    ]));
    d.prefix = "shared/${app}/".into();
    assert_eq!(field_errors(&d), ["prefix", "statements[0].resources[0]"]);
    assert!(errors_of(&d)[0].1.contains("same for every user"));
    // Derived from a resource without a user variable: no per-user home at all.
    d.prefix = String::new();
    let errs = errors_of(&d);
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].1.contains("no per-user home prefix"),
        "{}",
        errs[0].1
    );

    // Claims and hashes make a home per user; deny statements never need a mark.
    let d = doc(json!([
        { "effect": "allow", "actions": ["name/cos:GetObject"], "resources": ["t/${claim.tid}/${sub_hash}/*"] },
        { "effect": "deny", "actions": ["name/cos:DeleteObject"], "resources": ["*"] }
    ]));
    d.validate().unwrap();
    assert_eq!(d.reach(), [Reach::Home, Reach::Deny]);
    assert!(!d.reach()[1].is_beyond_home());
}

#[test]
fn shared_marks_round_trip_and_old_documents_still_load() {
    let v = json!({"prefix": "users/${sub}/", "statements": [
        {"effect": "allow", "actions": ["name/cos:GetObject"], "resources": ["users/${sub}/*"]},
        {"effect": "allow", "actions": ["name/cos:ListMultipartUploads"], "resources": ["/"],
         "shared": {"reason": "multipart bookkeeping"}}
    ]});
    let d: TemplateDocument = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(serde_json::to_value(&d).unwrap(), v);
    assert!(
        serde_json::to_value(TemplateDocument::default_for_users()).unwrap()["statements"][0]
            .get("shared")
            .is_none()
    );
    // A version saved before this rule (no mark) still loads and renders: the gateway never
    // refuses an active template; the versions page flags it instead.
    let old: TemplateDocument = serde_json::from_value(json!({"statements": [
        {"effect": "allow", "actions": ["name/cos:GetObject"], "resources": ["users/${sub}/*", "*"]}
    ]}))
    .unwrap();
    assert!(render_for(&old, "alice").is_ok());
    assert_eq!(old.reach(), [Reach::Unmarked { outside: vec![1] }]);
}
