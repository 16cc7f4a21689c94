//! Maps a request path to its route class and parameters. Both `/api/projects/{id}/…` and
//! `/api/environments/{id}/…` are accepted, and the trailing slash is optional.

use crate::fault::RouteClass;

/// The project part of a private-API path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProjectRef {
    Id(u64),
    /// `@current`: the key's current project.
    Current,
    /// Not a number.
    Invalid,
}

/// A recognised endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    Project,
    /// `POST …/query/[{Kind}/]`
    Query {
        kind: Option<String>,
    },
    /// `GET|DELETE …/query/{id}/[log/]`
    QueryStatus {
        id: String,
        log: bool,
    },
    List,
    Detail(String),
    /// `GET …/cohorts/{id}/persons/`
    CohortPersons(String),
    Me,
    Capture,
    Batch,
    Flags,
    Control(String),
    NotFound,
}

/// A classified request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Routed {
    pub class: RouteClass,
    pub route: Route,
    pub project: Option<ProjectRef>,
}

fn list_class(segment: &str) -> Option<RouteClass> {
    Some(match segment {
        "cohorts" => RouteClass::Cohorts,
        "feature_flags" => RouteClass::FeatureFlags,
        "insights" => RouteClass::Insights,
        "annotations" => RouteClass::Annotations,
        "experiments" => RouteClass::Experiments,
        "persons" => RouteClass::Persons,
        "property_definitions" => RouteClass::PropertyDefinitions,
        "event_definitions" => RouteClass::EventDefinitions,
        _ => return None,
    })
}

/// Classifies `path` requested with `method` (`POST …/query/{x}/` runs a query of kind `x`,
/// other methods address query `x`).
pub(crate) fn classify(method: &str, path: &str) -> Routed {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let plain = |class, route| Routed {
        class,
        route,
        project: None,
    };
    match segments.as_slice() {
        ["api", "projects" | "environments", id, rest @ ..] => {
            let project = Some(match *id {
                "@current" => ProjectRef::Current,
                other => other.parse().map_or(ProjectRef::Invalid, ProjectRef::Id),
            });
            let (class, route) = match rest {
                [] => (RouteClass::Project, Route::Project),
                ["query"] => (RouteClass::Query, Route::Query { kind: None }),
                ["query", x] if method == "POST" => (
                    RouteClass::Query,
                    Route::Query {
                        kind: Some((*x).to_owned()),
                    },
                ),
                ["query", x] => (
                    RouteClass::QueryStatus,
                    Route::QueryStatus {
                        id: (*x).to_owned(),
                        log: false,
                    },
                ),
                ["query", x, "log"] => (
                    RouteClass::QueryStatus,
                    Route::QueryStatus {
                        id: (*x).to_owned(),
                        log: true,
                    },
                ),
                [resource] => match list_class(resource) {
                    Some(c) => (c, Route::List),
                    None => (RouteClass::Other, Route::NotFound),
                },
                [resource, item] => match list_class(resource) {
                    Some(c) => (c, Route::Detail((*item).to_owned())),
                    None => (RouteClass::Other, Route::NotFound),
                },
                ["cohorts", item, "persons"] => (
                    RouteClass::Cohorts,
                    Route::CohortPersons((*item).to_owned()),
                ),
                _ => (RouteClass::Other, Route::NotFound),
            };
            Routed {
                class,
                route,
                project: if class == RouteClass::Other {
                    None
                } else {
                    project
                },
            }
        }
        ["api", "users", "@me"] => plain(RouteClass::Me, Route::Me),
        ["i", "v0", "e"] | ["capture"] | ["e"] => plain(RouteClass::Capture, Route::Capture),
        ["batch"] => plain(RouteClass::Batch, Route::Batch),
        ["flags"] | ["decide"] => plain(RouteClass::Flags, Route::Flags),
        ["_mock", rest @ ..] => plain(RouteClass::Control, Route::Control(rest.join("/"))),
        _ => plain(RouteClass::Other, Route::NotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_prefixes_and_optional_slash() {
        for p in [
            "/api/projects/1/query/",
            "/api/environments/1/query",
            "/api/projects/1/query/HogQLQuery/",
        ] {
            assert_eq!(classify("POST", p).class, RouteClass::Query, "{p}");
        }
        let r = classify("GET", "/api/projects/7/query/abc/");
        assert_eq!(r.class, RouteClass::QueryStatus);
        assert_eq!(r.project, Some(ProjectRef::Id(7)));
        assert_eq!(
            classify("GET", "/api/projects/1").class,
            RouteClass::Project
        );
        assert_eq!(
            classify("GET", "/api/projects/1/cohorts").class,
            RouteClass::Cohorts
        );
        assert_eq!(
            classify("GET", "/api/projects/1/cohorts/3/").route,
            Route::Detail("3".into())
        );
        assert_eq!(
            classify("GET", "/api/environments/1/cohorts/3/persons").route,
            Route::CohortPersons("3".into())
        );
        assert_eq!(
            classify("GET", "/api/projects/1/feature_flags/3/persons/").class,
            RouteClass::Other
        );
        assert_eq!(classify("GET", "/api/users/@me/").class, RouteClass::Me);
        assert_eq!(classify("POST", "/i/v0/e/").class, RouteClass::Capture);
        assert_eq!(classify("POST", "/flags").class, RouteClass::Flags);
        assert_eq!(
            classify("GET", "/api/projects/1/nope/").class,
            RouteClass::Other
        );
        assert_eq!(
            classify("GET", "/_mock/stats").route,
            Route::Control("stats".into())
        );
    }
}
