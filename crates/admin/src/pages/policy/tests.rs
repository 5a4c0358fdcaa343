//! The editor form, the claims parser and readable errors.

use super::form::{catalogue_name, index_of, statement_path};
use super::preview::{parse_claims, readable};
use super::*;
use policy_store::FieldError;

#[test]
fn paths_and_claims() {
    assert_eq!(
        statement_path("statements[12].resources[3]"),
        Some((12, ".resources[3]"))
    );
    assert_eq!(statement_path("prefix"), None);
    assert_eq!(index_of("[3]"), Some(3));
    assert_eq!(catalogue_name("cos:PutObject"), Some("PutObject"));
    assert_eq!(catalogue_name("name/cos:*"), None);

    let (claims, source) = parse_claims(r#"{"sub":"alice"}"#).unwrap();
    assert_eq!(claims["sub"], "alice");
    assert_eq!(source, "claims JSON");
    // header {"alg":"HS256"}, payload {"sub":"bob"}, any signature.
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJib2IifQ.c2ln";
    let (claims, source) = parse_claims(&format!("Bearer {jwt}")).unwrap();
    assert_eq!(claims["sub"], "bob");
    assert!(source.contains("NOT verified") && source.contains("HS256"));
    assert!(parse_claims("nonsense").is_err());
    assert!(parse_claims("[1]").is_err());
}

#[test]
fn errors_land_on_their_fields() {
    let form = FormData::parse(
        b"statement_count=2&prefix=users%2F%24%7Bsub%7D%2F\
          &st0_actions=name%2Fcos%3APutObject&st0_custom_actions=bogus\
          &st0_resources=users%2F%24%7Bsub%7D%2F*%0Ausers%2F%24%7Bsub%7D*\
          &st1_effect=deny&st1_actions=name%2Fcos%3AGetObject&st1_resources=x%2F*\
          &st1_conditions=%7B%22nope%22%3A%7B%22k%22%3A%22v%22%7D%7D",
    )
    .unwrap();
    let (mut editor, doc) = EditorForm::read(&form, "save");
    let doc = doc.unwrap();
    assert_eq!(doc.statements.len(), 2);
    assert_eq!(doc.statements[0].actions, ["name/cos:PutObject", "bogus"]);
    assert!(editor.statements[1].deny);
    let errs = doc.validate().unwrap_err();
    editor.apply(&doc, &errs);
    let st0 = &editor.statements[0].errors;
    assert!(
        st0.actions.iter().any(|m| m.starts_with("“bogus”")),
        "{:?}",
        st0.actions
    );
    assert!(
        st0.resources
            .iter()
            .any(|m| m.starts_with("line 2 “users/${sub}*”")),
        "{:?}",
        st0.resources
    );
    assert!(editor.statements[1].errors.conditions[0].starts_with("nope"));

    // Unreadable conditions stop the document; remove and add statements.
    let form =
        FormData::parse(b"statement_count=2&st0_conditions=%7Bx&st1_resources=a%2F*").unwrap();
    let (editor, doc) = EditorForm::read(&form, "add");
    assert!(doc.is_none());
    assert_eq!(editor.statements.len(), 3);
    assert!(!editor.statements[0].errors.conditions.is_empty());
    let (editor, doc) = EditorForm::read(&form, "remove:0");
    assert_eq!(editor.statements.len(), 1);
    assert_eq!(doc.unwrap().statements[0].resources, ["a/*"]);
}

#[test]
fn shared_marks_are_read_and_their_errors_marked_live() {
    // Statement 2 reaches the whole bucket: unmarked, then marked without a reason.
    let base = "statement_count=2&prefix=users%2F%24%7Bsub%7D%2F\
                &st0_actions=name%2Fcos%3AGetObject&st0_resources=users%2F%24%7Bsub%7D%2F*\
                &st1_actions=name%2Fcos%3AGetObject&st1_resources=*";
    let (mut editor, doc) = EditorForm::read(&FormData::parse(base.as_bytes()).unwrap(), "save");
    let doc = doc.unwrap();
    assert_eq!(doc.statements[1].shared, None);
    editor.apply(&doc, &doc.validate().unwrap_err());
    let live = editor.live_errors();
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(live[0].0, "st1_resources");
    assert!(
        live[0]
            .1
            .starts_with("line 1 “*”: this is outside the user's home prefix")
    );

    let marked = format!("{base}&st1_shared=on&st1_shared_reason=");
    let (mut editor, doc) = EditorForm::read(&FormData::parse(marked.as_bytes()).unwrap(), "save");
    let doc = doc.unwrap();
    assert!(editor.statements[1].shared);
    editor.apply(&doc, &doc.validate().unwrap_err());
    assert_eq!(editor.live_errors()[0].0, "st1_shared_reason");

    let reasoned = format!("{base}&st1_shared=on&st1_shared_reason=+public+catalogue+");
    let (_, doc) = EditorForm::read(&FormData::parse(reasoned.as_bytes()).unwrap(), "save");
    let doc = doc.unwrap();
    doc.validate().unwrap();
    assert_eq!(
        doc.statements[1].shared.as_ref().unwrap().reason,
        "public catalogue"
    );
    // Loaded back into the editor, the mark and its reason are shown.
    let back = EditorForm::from_document(&doc);
    assert!(back.statements[1].shared && back.statements[1].shared_reason == "public catalogue");
}

#[test]
fn errors_read_in_words() {
    let e = |f: &str| readable(&FieldError::new(f, "fix it"));
    assert_eq!(
        e("statements[1].resources[0]"),
        "Statement 2, resource 1: fix it"
    );
    assert_eq!(e("statements[0].actions"), "Statement 1, actions: fix it");
    assert_eq!(
        e("statements[2].conditions.string_like.cos:prefix"),
        "Statement 3, condition string_like.cos:prefix: fix it"
    );
    assert_eq!(
        e("statements[0].shared"),
        "Statement 1, shared reason: fix it"
    );
    assert_eq!(e("prefix"), "Home prefix: fix it");
    assert_eq!(e("statements"), "fix it");
}
