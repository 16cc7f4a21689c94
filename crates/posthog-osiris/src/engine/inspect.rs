//! `discover` (resources and their schemas, with a stable fingerprint) and `doctor`
//! (authentication, project access and query permission, classified, within a deadline).

use std::time::Instant;

use futures_util::TryStreamExt;
use posthog_client::{ErrorCategory, HogQlQuery, PropertyKind, RetryPolicy};
use posthog_core::{ColumnType, FieldKind, FieldSpec};
use sha2::{Digest, Sha256};

use super::source::{event_fields, person_fields, session_fields};
use crate::driver::{Context, Discovery, DoctorReport, Field, Resource};
use crate::{DataType, DriverError, ExtractConfig};

/// Lists every data type this release extracts, with its columns. Events and persons include
/// one `properties_<name>` column per property definition PostHog reports.
pub(crate) async fn discover(
    config: &ExtractConfig,
    ctx: &Context,
) -> Result<Discovery, DriverError> {
    let client = super::build_client(config, ctx)?;
    let mut resources = Vec::new();
    for data_type in DataType::ALL {
        let mut schema = match data_type {
            DataType::Events => fixed_fields(&event_fields()),
            DataType::Persons => fixed_fields(&person_fields()),
            DataType::Sessions => fixed_fields(&session_fields()),
            _ => vec![Field {
                name: "id".into(),
                data_type: "any".into(),
                nullable: false,
            }],
        };
        let kind = match data_type {
            DataType::Events => Some(PropertyKind::Event),
            DataType::Persons => Some(PropertyKind::Person),
            _ => None,
        };
        if let Some(kind) = kind {
            let mut properties: Vec<Field> = client
                .property_definitions(kind)
                .map_ok(|def| Field {
                    name: format!("properties_{}", def.name),
                    data_type: property_type(def.property_type.as_deref()).into(),
                    nullable: true,
                })
                .try_collect()
                .await?;
            properties.sort_by(|a, b| a.name.cmp(&b.name));
            properties.dedup_by(|a, b| a.name == b.name);
            schema.extend(properties);
        }
        resources.push(Resource {
            name: data_type.as_str().to_owned(),
            kind: "table",
            description: data_type.description().to_owned(),
            schema,
        });
    }
    resources.sort_by(|a, b| a.name.cmp(&b.name));
    let canonical = serde_json::to_vec(&resources)
        .map_err(|e| DriverError::Protocol(format!("cannot serialize the resources: {e}")))?;
    let fingerprint = format!("{:x}", Sha256::digest(&canonical));
    Ok(Discovery {
        resources,
        fingerprint,
        discovered_at: super::now_rfc3339(),
    })
}

fn fixed_fields(fields: &[FieldSpec]) -> Vec<Field> {
    fields
        .iter()
        .filter_map(|f| match f.kind {
            FieldKind::Fixed(ty) => Some(Field {
                name: f.name.clone(),
                data_type: column_type(ty).into(),
                nullable: !matches!(f.name.as_str(), "uuid" | "id" | "event" | "timestamp"),
            }),
            _ => None,
        })
        .collect()
}

fn column_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Utf8 => "string",
        ColumnType::Int64 => "integer",
        ColumnType::Float64 => "float",
        ColumnType::Boolean => "boolean",
        ColumnType::Timestamp => "timestamp",
        ColumnType::Json => "json",
    }
}

/// A property column's type as PostHog describes the property. The column's stored type is
/// fixed by the first value the extractor sees, so `Numeric` may become integer or float.
fn property_type(posthog: Option<&str>) -> &'static str {
    match posthog {
        Some("String") | Some("DateTime") => "string",
        Some("Numeric") | Some("Duration") => "number",
        Some("Boolean") => "boolean",
        _ => "any",
    }
}

/// Checks, in order, that the key authenticates and reaches the project, and that it may run
/// HogQL queries. No retries; the whole check is bounded by [`Context::doctor_timeout`].
pub(crate) async fn doctor(config: &ExtractConfig, ctx: &Context) -> DoctorReport {
    let started = Instant::now();
    let report = |category: Option<&'static str>, message: String| DoctorReport {
        status: if category.is_none() {
            "healthy"
        } else {
            "error"
        },
        category,
        message,
        timestamp: super::now_rfc3339(),
        latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    let client =
        match super::build_client_with(config, ctx, RetryPolicy::none(), ctx.doctor_timeout) {
            Ok(client) => client,
            Err(DriverError::Config(e)) if e.field.ends_with("api_key") => {
                return report(Some("auth"), e.to_string());
            }
            Err(e) => return report(Some("unknown"), e.to_string()),
        };
    let checks = async {
        let project = client.project().await.map_err(|e| ("project access", e))?;
        client
            .query(&HogQlQuery::new("select uuid from events limit 1").name("posthog-rs doctor"))
            .await
            .map_err(|e| ("HogQL query permission", e))?;
        Ok::<_, (&str, posthog_client::Error)>(project)
    };
    match tokio::time::timeout(ctx.doctor_timeout, checks).await {
        Ok(Ok(project)) => report(
            None,
            format!(
                "authenticated; project {} ({}) is accessible and HogQL queries are permitted",
                project.id,
                project.name.as_deref().unwrap_or("unnamed")
            ),
        ),
        Ok(Err((check, e))) => {
            let category = match e.category() {
                ErrorCategory::Auth => "auth",
                ErrorCategory::Permission | ErrorCategory::NotFound => "permission",
                ErrorCategory::Network => "network",
                ErrorCategory::Timeout => "timeout",
                _ => "unknown",
            };
            report(Some(category), format!("{check} check failed: {e}"))
        }
        Err(_) => report(
            Some("timeout"),
            format!(
                "the checks did not finish within {} ms",
                ctx.doctor_timeout.as_millis()
            ),
        ),
    }
}
