//! The policy table: the shipped default, the seed's radiology rule and a
//! few forbids, decided without a server. The same table runs through
//! `hearth policy check` and HTTP in the binary's tests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use auth::{Action, Policies, PolicyError, Principal, RequestContext, Resource};

fn principal(id: &str, roles: &[&str], attrs: &[(&str, &str)]) -> Principal {
    Principal {
        id: id.into(),
        name: id.into(),
        issuer: None,
        roles: roles.iter().map(|r| r.to_string()).collect::<BTreeSet<_>>(),
        attrs: attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        priority: None,
        limits: auth::Limits::default(),
    }
}

fn model(name: &str, attrs: &[(&str, &str)]) -> Resource {
    Resource::Model {
        name: name.into(),
        attrs: attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    }
}

/// 2026-11-24 at `hour`:00 UTC, from `ip`.
fn at(hour: u64, ip: Option<&str>) -> RequestContext {
    RequestContext {
        time: 1_795_478_400 + hour * 3600,
        source_ip: ip.map(|i| i.parse().unwrap()),
        tls_client: None,
    }
}

/// Name, principal, action, resource, context, allowed, deciding policies.
type Case<'a> = (
    &'a str,
    &'a Principal,
    Action,
    &'a Resource,
    RequestContext,
    bool,
    &'a [&'a str],
);

fn policies() -> Policies {
    Policies::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/policies")).unwrap()
}

#[test]
fn the_policy_table() {
    let p = policies();
    assert_eq!(p.files().len(), 3);
    let user = principal("key:u1", &["user"], &[]);
    let admin = principal("key:a1", &["admin"], &[]);
    let radiologist = principal(
        "key:r1",
        &["radiologist"],
        &[
            ("department", "radiology"),
            ("certification", "board_certified"),
        ],
    );
    let cardiologist = principal(
        "key:r2",
        &["radiologist"],
        &[
            ("department", "cardiology"),
            ("certification", "board_certified"),
        ],
    );
    let uncertified = principal("key:r3", &["radiologist"], &[("department", "radiology")]);
    let contractor = principal("key:c1", &["user", "contractor"], &[]);
    let intern = principal("key:i1", &["user", "intern"], &[]);
    let nobody = principal("key:n1", &[], &[]);
    let jwt_user = principal("jwt:https://idp.example/#alice", &["user"], &[]);
    let smollm2 = model("smollm2", &[]);
    let medical = model("medical_qa", &[("department", "radiology")]);
    let restricted = model("hr_assistant", &[("sensitivity", "restricted")]);
    let noon = at(12, Some("10.1.2.3"));
    let cases: Vec<Case> = vec![
        (
            "user predicts",
            &user,
            Action::Predict,
            &smollm2,
            noon.clone(),
            true,
            &["users-use-models"],
        ),
        (
            "user lists models",
            &user,
            Action::ListModels,
            &Resource::Server,
            noon.clone(),
            true,
            &["users-use-models"],
        ),
        (
            "user embeds",
            &user,
            Action::Embed,
            &smollm2,
            noon.clone(),
            true,
            &["users-use-models"],
        ),
        (
            "user may not pull",
            &user,
            Action::Pull,
            &smollm2,
            noon.clone(),
            false,
            &[],
        ),
        (
            "user may not manage keys",
            &user,
            Action::ManageKeys,
            &Resource::Server,
            noon.clone(),
            false,
            &[],
        ),
        (
            "admin manages keys inside",
            &admin,
            Action::ManageKeys,
            &Resource::Server,
            noon.clone(),
            true,
            &["admins-do-anything"],
        ),
        (
            "admin deletes a model",
            &admin,
            Action::DeleteModel,
            &smollm2,
            at(12, Some("192.168.1.5")),
            true,
            &["admins-do-anything"],
        ),
        (
            "forbid beats permit: admin from outside",
            &admin,
            Action::Admin,
            &Resource::Server,
            at(12, Some("192.168.1.5")),
            false,
            &["admin-only-inside"],
        ),
        (
            "forbid beats permit: admin without an address",
            &admin,
            Action::Admin,
            &Resource::Server,
            at(12, None),
            false,
            &["admin-only-inside"],
        ),
        (
            "radiologist uses medical_qa",
            &radiologist,
            Action::Predict,
            &medical,
            noon.clone(),
            true,
            &["radiologists-use-medical-qa"],
        ),
        (
            "radiologist from cardiology",
            &cardiologist,
            Action::Predict,
            &medical,
            noon.clone(),
            false,
            &[],
        ),
        (
            "radiologist without certification",
            &uncertified,
            Action::Predict,
            &medical,
            noon.clone(),
            false,
            &[],
        ),
        (
            "radiologist on another model",
            &radiologist,
            Action::Predict,
            &smollm2,
            noon.clone(),
            false,
            &[],
        ),
        (
            "radiologist embedding",
            &radiologist,
            Action::Embed,
            &medical,
            noon.clone(),
            false,
            &[],
        ),
        (
            "forbid beats permit: contractor on restricted",
            &contractor,
            Action::Predict,
            &restricted,
            noon.clone(),
            false,
            &["contractors-never-see-restricted"],
        ),
        (
            "contractor on an open model",
            &contractor,
            Action::Predict,
            &smollm2,
            noon.clone(),
            true,
            &["users-use-models"],
        ),
        (
            "forbid beats permit: intern at night",
            &intern,
            Action::Predict,
            &smollm2,
            at(20, Some("10.0.0.1")),
            false,
            &["interns-daytime-only"],
        ),
        (
            "intern by day",
            &intern,
            Action::Predict,
            &smollm2,
            at(9, Some("10.0.0.1")),
            true,
            &["users-use-models"],
        ),
        (
            "no roles, nothing",
            &nobody,
            Action::Predict,
            &smollm2,
            noon.clone(),
            false,
            &[],
        ),
        (
            "a token user",
            &jwt_user,
            Action::Predict,
            &smollm2,
            noon.clone(),
            true,
            &["users-use-models"],
        ),
    ];
    assert!(cases.len() >= 16);
    for (name, who, action, what, ctx, allowed, reasons) in cases {
        let d = p.decide(who, action, what, &ctx).unwrap();
        assert_eq!(d.allowed, allowed, "{name}: {d:?}");
        assert_eq!(d.reasons, reasons, "{name}");
        assert!(d.errors.is_empty(), "{name}: {:?}", d.errors);
    }
}

#[test]
fn no_policies_deny_everything() {
    let dir = tempfile::tempdir().unwrap();
    let p = Policies::load_dir(&dir.path().join("missing")).unwrap();
    assert!(p.is_empty());
    let admin = principal("key:a1", &["admin"], &[]);
    let d = p
        .decide(&admin, Action::Admin, &Resource::Server, &at(12, None))
        .unwrap();
    assert!(!d.allowed);
}

#[test]
fn bad_policies_are_refused_with_cedar_s_diagnostic() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.cedar");
    std::fs::write(&file, "permit (principal, action, resource) when { ;").unwrap();
    let err = Policies::load_dir(dir.path()).unwrap_err();
    assert!(matches!(err, PolicyError::Parse { .. }), "{err}");
    assert!(err.to_string().contains("broken.cedar"), "{err}");

    // Well-formed, but not Hearth's vocabulary: the schema refuses it.
    std::fs::write(
        &file,
        "permit (principal, action == Hearth::Action::\"fly\", resource);",
    )
    .unwrap();
    let err = Policies::load_dir(dir.path()).unwrap_err();
    assert!(matches!(err, PolicyError::Invalid { .. }), "{err}");
    assert!(err.to_string().contains("fly"), "{err}");

    std::fs::write(
        &file,
        "permit (principal, action, resource) when { principal.clearance > 3 };",
    )
    .unwrap();
    let err = Policies::load_dir(dir.path()).unwrap_err();
    assert!(matches!(err, PolicyError::Invalid { .. }), "{err}");
}

#[test]
fn the_shipped_files_validate() {
    for text in [
        auth::policy::DEFAULT_POLICIES,
        auth::policy::EXAMPLE_POLICIES,
    ] {
        Policies::from_sources(vec![("shipped.cedar".into(), text.to_string())]).unwrap();
    }
}
