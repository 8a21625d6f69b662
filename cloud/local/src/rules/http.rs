//! Topic rules over restJson1 (members, bindings and errors from `iot.json`): CreateTopicRule
//! `POST /rules/{ruleName}` and ReplaceTopicRule `PATCH /rules/{ruleName}` with the
//! `TopicRulePayload` as the body; GetTopicRule `GET /rules/{ruleName}` answering
//! `{ruleArn, rule}`; DeleteTopicRule `DELETE /rules/{ruleName}`; EnableTopicRule and
//! DisableTopicRule `POST /rules/{ruleName}/enable|disable`; ListTopicRules `GET /rules`
//! (`topic`, `ruleDisabled`, `maxResults` 1–10000, `nextToken`) answering
//! `{rules: [{ruleArn, ruleName, topicPattern, createdAt, ruleDisabled}], nextToken}`.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::json;

use super::{RuleError, TopicRulePayload, TopicRules};
use crate::http::AppState;
use crate::http::error::AwsError;
use crate::http::wire::{JsonBody, Label, Params, empty_ok, json_ok, page};

type Reply = Result<Response, AwsError>;

/// The topic-rule routes of the IoT control plane.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/rules", get(list))
        .route("/rules/{ruleName}", get(get_rule).post(create).patch(replace).delete(delete))
        .route("/rules/{ruleName}/enable", post(enable))
        .route("/rules/{ruleName}/disable", post(disable))
}

impl From<RuleError> for AwsError {
    fn from(e: RuleError) -> Self {
        match e {
            RuleError::InvalidRequest(m) => AwsError::invalid_request(m),
            RuleError::SqlParse(m) => AwsError::new(StatusCode::BAD_REQUEST, "SqlParseException", m),
            RuleError::AlreadyExists(m) => AwsError::new(StatusCode::CONFLICT, "ResourceAlreadyExistsException", m),
            RuleError::NoSuchRule(m) => AwsError::new(StatusCode::UNAUTHORIZED, "UnauthorizedException", m),
            RuleError::Store(e) => AwsError::internal(e.to_string()),
        }
    }
}

async fn on<T: Send + 'static>(
    st: &AppState,
    f: impl FnOnce(&TopicRules) -> Result<T, RuleError> + Send + 'static,
) -> Result<T, AwsError> {
    let rules = st.rules.clone();
    crate::http::blocking(move || f(&rules).map_err(AwsError::from)).await
}

async fn create(State(st): State<AppState>, Label(name): Label, JsonBody(body): JsonBody<TopicRulePayload>) -> Reply {
    on(&st, move |r| r.create(&name, body)).await?;
    Ok(empty_ok())
}

async fn replace(State(st): State<AppState>, Label(name): Label, JsonBody(body): JsonBody<TopicRulePayload>) -> Reply {
    on(&st, move |r| r.replace(&name, body)).await?;
    Ok(empty_ok())
}

async fn get_rule(State(st): State<AppState>, Label(name): Label) -> Reply {
    let (rule, arn) = on(&st, move |r| Ok((r.get(&name)?, r.arn(&name)))).await?;
    let mut body = json!({
        "ruleName": rule.rule_name,
        "sql": rule.sql,
        "description": rule.description,
        "createdAt": rule.created_at,
        "actions": rule.actions,
        "ruleDisabled": rule.rule_disabled,
        "awsIotSqlVersion": rule.aws_iot_sql_version,
    });
    if let Some(action) = rule.error_action {
        body["errorAction"] = action;
    }
    Ok(json_ok(&json!({"ruleArn": arn, "rule": body})))
}

async fn delete(State(st): State<AppState>, Label(name): Label) -> Reply {
    on(&st, move |r| r.delete(&name)).await?;
    Ok(empty_ok())
}

async fn enable(State(st): State<AppState>, Label(name): Label) -> Reply {
    on(&st, move |r| r.set_enabled(&name, true)).await?;
    Ok(empty_ok())
}

async fn disable(State(st): State<AppState>, Label(name): Label) -> Reply {
    on(&st, move |r| r.set_enabled(&name, false)).await?;
    Ok(empty_ok())
}

async fn list(State(st): State<AppState>, params: Params) -> Reply {
    let topic = params.str("topic").map(str::to_owned);
    let disabled = params.bool("ruleDisabled")?;
    let size = params.int("maxResults", 1, 10_000)?;
    let (rules, arns): (Vec<_>, Vec<_>) = on(&st, move |r| {
        let rules = r.list()?.into_iter().filter(|rule| {
            topic.as_ref().is_none_or(|t| &rule.topic_pattern == t) && disabled.is_none_or(|d| rule.rule_disabled == d)
        });
        Ok(rules.map(|rule| (rule.clone(), r.arn(&rule.rule_name))).unzip())
    })
    .await?;
    let items: Vec<_> = rules
        .into_iter()
        .zip(arns)
        .map(|(rule, arn)| {
            json!({"ruleArn": arn, "ruleName": rule.rule_name, "topicPattern": rule.topic_pattern,
                "createdAt": rule.created_at, "ruleDisabled": rule.rule_disabled})
        })
        .collect();
    let (items, next) = page(items, params.str("nextToken"), size, 1000)?;
    let mut body = json!({ "rules": items });
    if let Some(next) = next {
        body["nextToken"] = json!(next);
    }
    Ok(json_ok(&body))
}
