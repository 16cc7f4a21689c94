//! `discover` (resources and their schemas, with a stable fingerprint) and `doctor`
//! (authentication, project access and query permission, classified, within a deadline).

use std::time::Instant;

use futures_util::TryStreamExt;
use posthog_client::{Category, HogQlQuery, PropertyKind, RetryPolicy};
use posthog_core::{ColumnType, FieldKind, FieldSpec};
use sha2::{Digest, Sha256};

use super::source::{PERSON_PROPERTIES, Source, event_fields, person_fields, session_fields};
use crate::driver::{Context, DiscoveredResource, Discovery, DoctorReport, Field};
use crate::{DataType, DriverError, ExtractConfig};

/// Lists every data type this release extracts, with its columns, as the config would write
/// them. Events and persons include one `properties_<name>` column per property definition
/// PostHog reports, and events one `person_properties_<name>` per person property (unless the
/// config leaves person properties out); with `output.flatten_properties: false` each is one
/// JSON column instead.
pub(crate) async fn discover(
    config: &ExtractConfig,
    ctx: &Context,
) -> Result<Discovery, DriverError> {
    let client = super::build_client(config, ctx)?;
    let flatten = config.output.flatten_properties;
    let event_properties = property_columns(&client, PropertyKind::Event, flatten).await?;
    let person_properties = property_columns(&client, PropertyKind::Person, flatten).await?;
    // Discovery describes every type; only an events config can turn person properties off.
    let events_with_person =
        config.source.data_type != DataType::Events || config.source.include_person_properties;
    let mut resources = Vec::new();
    for data_type in DataType::ALL {
        let (fields, property_sets) = match data_type {
            DataType::Events if events_with_person => (
                event_fields(true),
                vec![
                    ("properties", &event_properties),
                    (PERSON_PROPERTIES, &person_properties),
                ],
            ),
            DataType::Events => (event_fields(false), vec![("properties", &event_properties)]),
            DataType::Persons => (person_fields(), vec![("properties", &person_properties)]),
            DataType::Sessions => (session_fields(), Vec::new()),
            _ => (Source::rest_fields(), Vec::new()),
        };
        let mut schema = fixed_fields(&fields);
        for (field, properties) in property_sets {
            schema.extend(flattened(field, properties, flatten));
        }
        resources.push(DiscoveredResource {
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

/// The property definitions PostHog reports for `kind`, sorted by name without repeats, as
/// `(name, column type)`; empty when properties are not flattened (nothing to list).
async fn property_columns(
    client: &posthog_client::Client,
    kind: PropertyKind,
    flatten: bool,
) -> Result<Vec<(String, &'static str)>, DriverError> {
    if !flatten {
        return Ok(Vec::new());
    }
    let mut properties: Vec<(String, &'static str)> = client
        .property_definitions(kind)
        .map_ok(|def| (def.name, property_type(def.property_type.as_deref())))
        .try_collect()
        .await?;
    properties.sort_by(|a, b| a.0.cmp(&b.0));
    properties.dedup_by(|a, b| a.0 == b.0);
    Ok(properties)
}

/// The columns a flattened field becomes: `<field>_<name>` per property, or the field itself
/// as one JSON column.
fn flattened(field: &str, properties: &[(String, &'static str)], flatten: bool) -> Vec<Field> {
    if !flatten {
        return vec![Field {
            name: field.to_owned(),
            data_type: "json".into(),
            nullable: true,
        }];
    }
    properties
        .iter()
        .map(|(name, data_type)| Field {
            name: format!("{field}_{name}"),
            data_type: (*data_type).into(),
            nullable: true,
        })
        .collect()
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
            FieldKind::Dynamic => Some(Field {
                name: f.name.clone(),
                data_type: "any".into(),
                nullable: false,
            }),
            FieldKind::Flatten => None,
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
    let report = |category: Option<Category>, message: String| DoctorReport {
        status: if category.is_none() {
            "healthy"
        } else {
            "error"
        },
        category: category.map(Category::as_str),
        message,
        timestamp: super::now_rfc3339(),
        latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    let client =
        match super::build_client_with(config, ctx, RetryPolicy::none(), ctx.doctor_timeout) {
            Ok(client) => client,
            Err(DriverError::Config(e)) if e.field.ends_with("api_key") => {
                return report(Some(Category::Auth), e.to_string());
            }
            Err(e) => return report(Some(Category::Unknown), e.to_string()),
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
                category @ (Category::Auth | Category::Network | Category::Timeout) => category,
                Category::Permission | Category::NotFound => Category::Permission,
                _ => Category::Unknown,
            };
            report(Some(category), format!("{check} check failed: {e}"))
        }
        Err(_) => report(
            Some(Category::Timeout),
            format!(
                "the checks did not finish within {} ms",
                ctx.doctor_timeout.as_millis()
            ),
        ),
    }
}
