//! Apps as code over PostgreSQL: [`AppsAsCodeStore`].
//!
//! An apply runs in one transaction: it takes an advisory lock (one apply at a time), reads
//! the stored apps, validates every spec with the checks the pages and the API use (the same
//! functions the writers call), computes the plan, and only then writes, through the same
//! writers as the pages (so the change log and the notifications are theirs). Any error rolls
//! everything back; a dry run always does.

use std::collections::HashSet;

use async_trait::async_trait;
use sqlx::PgConnection;
use sqlx::types::Json;

use super::PgStore;
use crate::error::{DbResult as _, FieldError, Result, StoreError};
use crate::model::*;
use crate::repo::AppsAsCodeStore;
use crate::spec::{
    AppPlan, AppSpec, ApplyOptions, BlockSpec, ChangeOp, FieldChange, MAX_BLOCKED_SUBJECTS, Plan,
    PlanAction, app_changes, auth_changes, block_changes, secrets_equal, template_change,
};
use crate::template::TemplateDocument;
use crate::validate::{validate_app, validate_subject};

/// `pg_advisory_xact_lock` key that serialises applies ("stsapply").
const APPLY_LOCK_KEY: i64 = 0x7374_7361_7070_6c79;

/// The note saved with a template version an apply writes.
const TEMPLATE_NOTE: &str = "stsgate apply";

async fn active_document(tx: &mut PgConnection, id: AppId) -> Result<Option<TemplateDocument>> {
    let doc: Option<Json<TemplateDocument>> = sqlx::query_scalar(
        "SELECT t.document FROM apps a JOIN policy_templates t \
           ON t.app_id = a.id AND t.version = a.active_template_version \
         WHERE a.id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await
    .db()?;
    Ok(doc.map(|Json(d)| d))
}

async fn blocks(tx: &mut PgConnection, id: AppId) -> Result<Vec<(String, Option<String>)>> {
    sqlx::query_as(
        "SELECT subject, reason FROM blocked_subjects WHERE app_id = $1 ORDER BY subject",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await
    .db()
}

fn prefixed(prefix: &str, errs: impl IntoIterator<Item = FieldError>) -> Vec<FieldError> {
    errs.into_iter()
        .map(|e| FieldError::new(format!("{prefix}{}", e.field), e.message))
        .collect()
}

/// What one spec needs written, once validated.
struct Step<'a> {
    stored: Option<&'a App>,
    input: AppInput,
    app_changed: bool,
    auth: Option<AppAuthInput>,
    template: Option<&'a TemplateDocument>,
    block: Vec<BlockSpec>,
    unblock: Vec<String>,
}

#[async_trait]
impl AppsAsCodeStore for PgStore {
    async fn export_specs(&self) -> Result<Vec<AppSpec>> {
        let mut tx = self.pool.begin().await.db()?;
        // One consistent snapshot of every app.
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .db()?;
        let apps = self.apps_in(&mut tx, false).await?;
        let mut specs = Vec::with_capacity(apps.len());
        for app in &apps {
            let auth = self.app_auth_in(&mut tx, app.id).await?;
            let template = active_document(&mut tx, app.id).await?;
            let blocked = blocks(&mut tx, app.id)
                .await?
                .into_iter()
                .map(|(subject, reason)| BlockSpec { subject, reason })
                .collect();
            specs.push(AppSpec::from_stored(app, auth.as_ref(), template, blocked));
        }
        tx.rollback().await.db()?;
        Ok(specs)
    }

    async fn apply_specs(
        &self,
        actor: &str,
        specs: &[AppSpec],
        options: ApplyOptions,
    ) -> Result<Plan> {
        if options.prune && specs.is_empty() {
            // Almost certainly a wrong or truncated file, not a wish to disable every app.
            return Err(StoreError::Invalid(vec![FieldError::new(
                "apps",
                "the spec lists no app, and pruning would disable every app: list the apps to keep",
            )]));
        }
        let mut tx = self.pool.begin().await.db()?;
        if options.dry_run {
            // A dry run reads one snapshot and locks nothing (not even against an apply).
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *tx)
                .await
                .db()?;
        } else {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(APPLY_LOCK_KEY)
                .execute(&mut *tx)
                .await
                .db()?;
        }
        // The row locks keep the pages from writing an app between the plan and the writes;
        // their mode lets issuance's foreign-key checks through (see `apps_in`).
        let stored_apps = self.apps_in(&mut tx, !options.dry_run).await?;
        let listed: HashSet<&str> = specs.iter().map(|s| s.slug.trim()).collect();
        let mut seen_slugs: HashSet<&str> = HashSet::with_capacity(specs.len());

        // 1. Validate everything and compute the plan; nothing is written yet.
        let mut errors = Vec::new();
        let mut steps = Vec::with_capacity(specs.len());
        let mut plan = Plan {
            apps: Vec::new(),
            unmanaged: Vec::new(),
            applied: false,
        };
        for spec in specs {
            let slug = spec.slug.trim();
            let at = format!("apps.{slug}.");
            if !seen_slugs.insert(slug) {
                errors.push(FieldError::new(
                    format!("apps.{slug}"),
                    "the app is listed twice: keep one",
                ));
                continue;
            }
            let stored = stored_apps.iter().find(|a| a.slug == slug);
            let input = spec.app_input(stored);
            let mut app_errors = validate_app(&input, stored.is_none());
            if stored.is_none() && input.secret_key.is_none() {
                app_errors.retain(|e| e.field != "secret_key");
                app_errors.push(FieldError::new(
                    "secret_key",
                    "a new app needs its permanent SecretKey: give secret_key_env or secret_key_file",
                ));
            }
            errors.extend(prefixed(&at, app_errors));

            let mut changes = app_changes(stored, &input);
            let app_changed = !changes.is_empty();

            let stored_auth = match stored {
                Some(a) => self.app_auth_in(&mut tx, a.id).await?,
                None => None,
            };
            let auth = match &spec.jwt {
                Some(jwt) => {
                    let mut input = jwt.auth_input();
                    errors.extend(prefixed(
                        &format!("{at}jwt."),
                        crate::jwt::check_auth_input(
                            stored.map_or(0, |a| a.id),
                            &input,
                            stored_auth.as_ref().and_then(|a| a.hs_secret.as_ref()),
                            self.jwt,
                        ),
                    ));
                    let c = auth_changes(stored_auth.as_ref(), &input);
                    let changed = !c.is_empty();
                    // An unchanged HS secret is not rewritten (nor logged as changed).
                    if !c.iter().any(|c| c.field == "jwt.hs_secret") {
                        input.hs_secret = None;
                    }
                    changes.extend(c);
                    changed.then_some(input)
                }
                None => None,
            };

            let template = match &spec.template {
                Some(doc) => {
                    if let Err(e) = doc.validate() {
                        errors.extend(prefixed(&format!("{at}template."), e));
                    }
                    let active = match stored {
                        Some(a) => active_document(&mut tx, a.id).await?,
                        None => None,
                    };
                    let c = template_change(active.as_ref(), doc);
                    let changed = c.is_some();
                    changes.extend(c);
                    changed.then_some(doc)
                }
                None => None,
            };

            if spec.blocked_subjects.len() > MAX_BLOCKED_SUBJECTS {
                errors.push(FieldError::new(
                    format!("{at}blocked_subjects"),
                    format!(
                        "{} subjects listed; an app's spec may block at most {MAX_BLOCKED_SUBJECTS} \
                         (block the others on the pages or the API)",
                        spec.blocked_subjects.len()
                    ),
                ));
                continue;
            }
            let mut seen_subjects = HashSet::with_capacity(spec.blocked_subjects.len());
            for (j, b) in spec.blocked_subjects.iter().enumerate() {
                let field = format!("{at}blocked_subjects[{j}].subject");
                if let Err(StoreError::Invalid(e)) = validate_subject(&b.subject) {
                    errors.extend(e.into_iter().map(|e| FieldError::new(&field, e.message)));
                } else if !seen_subjects.insert(b.subject.as_str()) {
                    errors.push(FieldError::new(field, "the subject is listed twice"));
                }
            }
            let stored_blocks = match stored {
                Some(a) => blocks(&mut tx, a.id).await?,
                None => Vec::new(),
            };
            let b = block_changes(&stored_blocks, &spec.blocked_subjects, options.prune);
            changes.extend(b.changes);
            let mut notes: Vec<String> = b
                .kept
                .iter()
                .map(|s| {
                    format!(
                        "subject {s:?} is blocked but not in the spec: kept (pruning unblocks it)"
                    )
                })
                .collect();
            if spec.jwt.is_none() && stored_auth.is_some() {
                notes.push("no JWT settings in the spec: the stored ones are kept".into());
            }
            if spec.template.is_none()
                && stored.is_some_and(|a| a.active_template_version.is_some())
            {
                notes.push("no template in the spec: the active version is kept".into());
            }

            let action = match (stored, changes.is_empty()) {
                (None, _) => PlanAction::Create,
                (Some(_), false) => PlanAction::Update,
                (Some(_), true) => PlanAction::Unchanged,
            };
            plan.apps.push(AppPlan {
                slug: slug.to_owned(),
                action,
                changes,
                notes,
            });
            steps.push(Step {
                stored,
                input,
                app_changed,
                auth,
                template,
                block: b.block,
                unblock: b.unblock,
            });
        }
        if !errors.is_empty() {
            return Err(StoreError::Invalid(errors));
        }
        let mut disable = Vec::new();
        for app in &stored_apps {
            if listed.contains(app.slug.as_str()) {
                continue;
            }
            if !options.prune {
                plan.unmanaged.push(app.slug.clone());
            } else if app.enabled {
                plan.apps.push(AppPlan {
                    slug: app.slug.clone(),
                    action: PlanAction::Disable,
                    changes: vec![FieldChange {
                        field: "enabled".into(),
                        op: ChangeOp::Change,
                        before: Some(true.into()),
                        after: Some(false.into()),
                    }],
                    notes: vec!["not in the spec: disabled (apps are never deleted)".into()],
                });
                disable.push(app.id);
            }
        }
        if options.dry_run || plan.is_empty() {
            tx.rollback().await.db()?;
            return Ok(plan);
        }

        // 2. Write, through the pages' own writers, in this one transaction.
        for step in steps {
            let id = match step.stored {
                None => self.create_app_in(&mut tx, actor, &step.input).await?.id,
                Some(app) => {
                    if step.app_changed {
                        let mut input = step.input.clone();
                        // An unchanged SecretKey is not rewritten (nor logged as changed).
                        if let Some(k) = &input.secret_key
                            && secrets_equal(k, &app.secret_key)
                        {
                            input.secret_key = None;
                        }
                        self.update_app_in(&mut tx, actor, app.id, &input).await?;
                        if app.enabled && !input.enabled {
                            super::cluster::purge_shared_credentials(&mut tx, app.id, None).await?;
                        }
                    }
                    app.id
                }
            };
            if let Some(auth) = &step.auth {
                self.set_app_auth_in(&mut tx, actor, id, auth).await?;
            }
            if let Some(doc) = step.template {
                self.save_template_in(&mut tx, actor, id, doc, Some(TEMPLATE_NOTE))
                    .await?;
            }
            for b in &step.block {
                self.block_subject_in(&mut tx, actor, id, &b.subject, b.reason.as_deref())
                    .await?;
            }
            for s in &step.unblock {
                self.unblock_subject_in(&mut tx, actor, id, s).await?;
            }
        }
        for id in disable {
            self.set_app_enabled_in(&mut tx, actor, id, false).await?;
        }
        tx.commit().await.db()?;
        plan.applied = true;
        Ok(plan)
    }
}
