//! DynamoDB, the subset the solution uses, embedded from dynoxide (an SQLite-backed DynamoDB
//! engine checked against real DynamoDB by its own conformance suite): tables and items live
//! in `dynamodb.sqlite` in the data directory, so they survive a restart.
//!
//! The wire protocol is AWS JSON 1.0 (the `dynamodb` service model, API version 2012-08-10):
//! `POST /` with `X-Amz-Target: DynamoDB_20120810.{Operation}` and a JSON body, answered with
//! `application/x-amz-json-1.0`; an error is HTTP 400 (500 for the service's own failures)
//! with `{"__type": "{namespace}#{Shape}", "message": …}`, the shape name being what
//! `aws-sdk-dynamodb` and botocore raise. [`http`] serves it on the local cloud's HTTP
//! endpoint; requests are SigV4-signed for `dynamodb` and authorized per operation
//! (`dynamodb:{Operation}` on `arn:aws:dynamodb:{region}:{account}:table/{TableName}`).
//!
//! Operations served: CreateTable, DescribeTable, DeleteTable, ListTables, PutItem, GetItem,
//! UpdateItem, DeleteItem, Query and Scan, with dynoxide's expressions (condition, update,
//! key condition, filter, projection) and pagination. Anything else is an
//! `UnknownOperationException`.

pub mod http;

use std::path::Path;

use anyhow::Context as _;
use dynoxide::DynoxideError;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// The operations served, by their `X-Amz-Target` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// CreateTable.
    CreateTable,
    /// DescribeTable.
    DescribeTable,
    /// DeleteTable.
    DeleteTable,
    /// ListTables.
    ListTables,
    /// PutItem.
    PutItem,
    /// GetItem.
    GetItem,
    /// UpdateItem.
    UpdateItem,
    /// DeleteItem.
    DeleteItem,
    /// Query.
    Query,
    /// Scan.
    Scan,
}

impl Operation {
    const ALL: [Operation; 10] = [
        Operation::CreateTable,
        Operation::DescribeTable,
        Operation::DeleteTable,
        Operation::ListTables,
        Operation::PutItem,
        Operation::GetItem,
        Operation::UpdateItem,
        Operation::DeleteItem,
        Operation::Query,
        Operation::Scan,
    ];

    /// The operation's name, as in `X-Amz-Target` and the IAM action.
    pub fn name(self) -> &'static str {
        match self {
            Operation::CreateTable => "CreateTable",
            Operation::DescribeTable => "DescribeTable",
            Operation::DeleteTable => "DeleteTable",
            Operation::ListTables => "ListTables",
            Operation::PutItem => "PutItem",
            Operation::GetItem => "GetItem",
            Operation::UpdateItem => "UpdateItem",
            Operation::DeleteItem => "DeleteItem",
            Operation::Query => "Query",
            Operation::Scan => "Scan",
        }
    }

    /// The operation an `X-Amz-Target` names (`DynamoDB_20120810.PutItem`).
    pub fn from_target(target: &str) -> Option<Self> {
        let name = target.strip_prefix(TARGET_PREFIX)?;
        Self::ALL.into_iter().find(|op| op.name() == name)
    }
}

/// What every `X-Amz-Target` of this API starts with.
pub const TARGET_PREFIX: &str = "DynamoDB_20120810.";

/// The content type of requests and answers.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.0";

/// A DynamoDB error, ready for the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamoError {
    /// HTTP status: 400, or 500 for the service's own failures.
    pub status: u16,
    /// The JSON body (`__type`, `message`, and the shape's members).
    pub body: String,
    /// The shape name (`ResourceNotFoundException`).
    pub kind: String,
    /// What went wrong.
    pub message: String,
}

impl DynamoError {
    /// An error of the shape `namespace#kind` with HTTP 400.
    pub fn new(namespace: &str, kind: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        let body = serde_json::json!({"__type": format!("{namespace}#{kind}"), "message": message}).to_string();
        DynamoError { status: 400, body, kind: kind.to_owned(), message }
    }

    /// `AccessDeniedException`: the caller's policies do not allow the operation.
    pub fn access_denied(message: impl Into<String>) -> Self {
        Self::new(COMMON, "AccessDeniedException", message)
    }

    /// `SerializationException`: the body is not the operation's JSON.
    pub fn serialization(message: impl Into<String>) -> Self {
        Self::new(COMMON, "SerializationException", message)
    }

    /// `UnknownOperationException`: the target names no served operation.
    pub fn unknown_operation(target: &str) -> Self {
        Self::new(
            COMMON,
            "UnknownOperationException",
            format!("the local cloud's DynamoDB does not serve {target:?} (see its README for what it does)"),
        )
    }
}

impl std::fmt::Display for DynamoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for DynamoError {}

/// The namespace of errors every AWS JSON service shares.
const COMMON: &str = "com.amazon.coral.service";

impl From<DynoxideError> for DynamoError {
    fn from(e: DynoxideError) -> Self {
        let full = e.error_type();
        let kind = full.rsplit('#').next().unwrap_or(full).to_owned();
        // An operation the engine cannot do is DynamoDB's own refusal here, not a 501.
        let status =
            if e.status_code() >= 500 && !matches!(e, DynoxideError::UnsupportedCapability(_)) { 500 } else { 400 };
        DynamoError { status, body: e.to_json(), kind, message: e.to_string() }
    }
}

/// The local cloud's DynamoDB: one database, shared by the HTTP API and the rules engine.
#[derive(Clone)]
pub struct DynamoDb {
    db: dynoxide::Database,
    region: String,
    account: String,
}

impl std::fmt::Debug for DynamoDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoDb").field("region", &self.region).field("account", &self.account).finish()
    }
}

/// How dynoxide writes its own ARNs; the local cloud's region and account replace them.
const ENGINE_ARN_PREFIX: &str = "arn:aws:dynamodb:dynoxide:000000000000:";

impl DynamoDb {
    /// Opens (or creates) the database file `path`.
    pub fn open(path: &Path, region: &str, account: &str) -> anyhow::Result<Self> {
        let name = path.to_str().with_context(|| format!("{} is not a UTF-8 path", path.display()))?;
        let db = dynoxide::Database::new(name).map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))?;
        Ok(DynamoDb { db, region: region.to_owned(), account: account.to_owned() })
    }

    /// A database in memory, for tests.
    pub fn memory(region: &str, account: &str) -> anyhow::Result<Self> {
        let db = dynoxide::Database::memory().map_err(|e| anyhow::anyhow!("opening DynamoDB in memory: {e}"))?;
        Ok(DynamoDb { db, region: region.to_owned(), account: account.to_owned() })
    }

    /// The ARN of a table.
    pub fn table_arn(&self, table: &str) -> String {
        format!("arn:aws:dynamodb:{}:{}:table/{table}", self.region, self.account)
    }

    /// The IAM action and resource of a request: `dynamodb:{Operation}` on the table (on its
    /// index for a Query or Scan of one), `*` for ListTables.
    pub fn action_and_resource(&self, op: Operation, request: &Map<String, Value>) -> (String, String) {
        let action = format!("dynamodb:{}", op.name());
        if op == Operation::ListTables {
            return (action, "*".into());
        }
        let table = request.get("TableName").and_then(Value::as_str).unwrap_or_default();
        let mut resource = self.table_arn(table);
        if let (Operation::Query | Operation::Scan, Some(index)) =
            (op, request.get("IndexName").and_then(Value::as_str))
        {
            resource = format!("{resource}/index/{index}");
        }
        (action, resource)
    }

    /// Runs `op` on its JSON request; the JSON answer. Synchronous (SQLite): call it from the
    /// blocking pool.
    pub fn call(&self, op: Operation, request: Value) -> Result<String, DynamoError> {
        let db = &self.db;
        let answer = match op {
            Operation::CreateTable => run(request, |r| db.create_table(r)),
            Operation::DescribeTable => run(request, |r| db.describe_table(r)),
            Operation::DeleteTable => run(request, |r| db.delete_table(r)),
            Operation::ListTables => run(request, |r| db.list_tables(r)),
            Operation::PutItem => run(request, |r| db.put_item(r)),
            Operation::GetItem => run(request, |r| db.get_item(r)),
            Operation::UpdateItem => run(request, |r| db.update_item(r)),
            Operation::DeleteItem => run(request, |r| db.delete_item(r)),
            Operation::Query => run(request, |r| db.query(r)),
            Operation::Scan => run(request, |r| db.scan(r)),
        }?;
        // Only table descriptions carry the engine's ARNs; items are the caller's data, left as stored.
        Ok(match op {
            Operation::CreateTable | Operation::DescribeTable | Operation::DeleteTable => {
                answer.replace(ENGINE_ARN_PREFIX, &format!("arn:aws:dynamodb:{}:{}:", self.region, self.account))
            }
            _ => answer,
        })
    }

    /// The names of a table's key attributes (partition key first).
    pub fn key_attributes(&self, table: &str) -> Result<Vec<String>, DynamoError> {
        let request = serde_json::json!({"TableName": table});
        let described = self.db.describe_table(parse(request)?)?;
        Ok(described.table.key_schema.into_iter().map(|k| k.attribute_name).collect())
    }

    /// Puts a JSON object as an item, each member an attribute ([`attribute_value`]): what AWS
    /// IoT's DynamoDBv2 rule action does with a rule's result. The item must hold the table's
    /// key attributes.
    pub fn put_json_item(&self, table: &str, object: &Map<String, Value>) -> Result<(), DynamoError> {
        let keys = self.key_attributes(table)?;
        let missing: Vec<&str> = keys.iter().map(String::as_str).filter(|k| !object.contains_key(*k)).collect();
        if !missing.is_empty() {
            return Err(DynamoError::new(
                "com.amazon.coral.validate",
                "ValidationException",
                format!("the item lacks the key attribute(s) {} of table {table}", missing.join(", ")),
            ));
        }
        let item: Map<String, Value> = object.iter().map(|(k, v)| (k.clone(), attribute_value(v))).collect();
        self.call(Operation::PutItem, serde_json::json!({"TableName": table, "Item": item}))?;
        Ok(())
    }
}

/// A JSON value as a DynamoDB attribute value: strings `S`, numbers `N`, booleans `BOOL`,
/// null `NULL`, arrays `L`, objects `M`.
pub fn attribute_value(value: &Value) -> Value {
    let (kind, inner) = match value {
        Value::String(s) => ("S", Value::String(s.clone())),
        Value::Number(n) => ("N", Value::String(n.to_string())),
        Value::Bool(b) => ("BOOL", Value::Bool(*b)),
        Value::Null => ("NULL", Value::Bool(true)),
        Value::Array(items) => ("L", Value::Array(items.iter().map(attribute_value).collect())),
        Value::Object(members) => {
            ("M", Value::Object(members.iter().map(|(k, v)| (k.clone(), attribute_value(v))).collect()))
        }
    };
    serde_json::json!({ kind: inner })
}

fn parse<R: DeserializeOwned>(request: Value) -> Result<R, DynamoError> {
    serde_json::from_value(request).map_err(|e| DynamoError::serialization(e.to_string()))
}

fn run<R: DeserializeOwned, A: Serialize>(
    request: Value,
    operation: impl FnOnce(R) -> dynoxide::Result<A>,
) -> Result<String, DynamoError> {
    let answer = operation(parse(request)?)?;
    serde_json::to_string(&answer).map_err(|e| DynamoError::new(COMMON, "InternalFailure", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn db() -> DynamoDb {
        let db = DynamoDb::memory("us-east-1", "000000000000").unwrap();
        let table = json!({"TableName": "readings",
            "KeySchema": [{"AttributeName": "thing", "KeyType": "HASH"}, {"AttributeName": "ts", "KeyType": "RANGE"}],
            "AttributeDefinitions": [{"AttributeName": "thing", "AttributeType": "S"},
                {"AttributeName": "ts", "AttributeType": "N"}],
            "BillingMode": "PAY_PER_REQUEST"});
        db.call(Operation::CreateTable, table).unwrap();
        db
    }

    #[test]
    fn targets_name_only_the_served_operations() {
        assert_eq!(Operation::from_target("DynamoDB_20120810.PutItem"), Some(Operation::PutItem));
        assert_eq!(Operation::from_target("DynamoDB_20120810.Scan"), Some(Operation::Scan));
        assert_eq!(Operation::from_target("DynamoDB_20120810.ExecuteStatement"), None);
        assert_eq!(Operation::from_target("PutItem"), None);
        for op in Operation::ALL {
            assert_eq!(Operation::from_target(&format!("{TARGET_PREFIX}{}", op.name())), Some(op));
        }
    }

    #[test]
    fn answers_carry_the_local_clouds_region_and_account() {
        let db = db();
        let described = db.call(Operation::DescribeTable, json!({"TableName": "readings"})).unwrap();
        let described: Value = serde_json::from_str(&described).unwrap();
        assert_eq!(described["Table"]["TableArn"], "arn:aws:dynamodb:us-east-1:000000000000:table/readings");
        let text = format!("{ENGINE_ARN_PREFIX}table/readings");
        let item = json!({"thing": {"S": "pump-1"}, "ts": {"N": "1"}, "note": {"S": text}});
        db.call(Operation::PutItem, json!({"TableName": "readings", "Item": item})).unwrap();
        let scanned: Value =
            serde_json::from_str(&db.call(Operation::Scan, json!({"TableName": "readings"})).unwrap()).unwrap();
        assert_eq!(scanned["Items"][0]["note"]["S"], text, "an item's own text is not rewritten");
    }

    #[test]
    fn errors_keep_dynamodbs_shape_names() {
        let db = db();
        let missing = db.call(Operation::GetItem, json!({"TableName": "nope", "Key": {"thing": {"S": "a"}}}));
        let e = missing.unwrap_err();
        assert_eq!((e.status, e.kind.as_str()), (400, "ResourceNotFoundException"));
        let body: Value = serde_json::from_str(&e.body).unwrap();
        assert_eq!(body["__type"], "com.amazonaws.dynamodb.v20120810#ResourceNotFoundException");
        let wrong = db.call(Operation::PutItem, json!({"TableName": 7})).unwrap_err();
        assert_eq!(wrong.kind, "SerializationException");
    }

    #[test]
    fn json_objects_become_items_and_need_the_key_attributes() {
        let db = db();
        let reading = json!({"thing": "pump-1", "ts": 17, "ok": true, "gone": null,
            "speeds": [1, "x"], "limits": {"max": 2.5}});
        db.put_json_item("readings", reading.as_object().unwrap()).unwrap();
        let got = db
            .call(
                Operation::GetItem,
                json!({"TableName": "readings", "Key": {"thing": {"S": "pump-1"}, "ts": {"N": "17"}}}),
            )
            .unwrap();
        let got: Value = serde_json::from_str(&got).unwrap();
        assert_eq!(got["Item"]["ok"], json!({"BOOL": true}));
        assert_eq!(got["Item"]["speeds"], json!({"L": [{"N": "1"}, {"S": "x"}]}));
        assert_eq!(got["Item"]["limits"], json!({"M": {"max": {"N": "2.5"}}}));
        let partial = db.put_json_item("readings", json!({"thing": "pump-1"}).as_object().unwrap()).unwrap_err();
        assert!(partial.message.contains("ts"), "{partial}");
        let absent = db.put_json_item("nope", reading.as_object().unwrap()).unwrap_err();
        assert_eq!(absent.kind, "ResourceNotFoundException");
    }

    #[test]
    fn requests_name_the_table_or_index_they_touch() {
        let db = db();
        let query = json!({"TableName": "readings", "IndexName": "by-ts"});
        assert_eq!(
            db.action_and_resource(Operation::Query, query.as_object().unwrap()),
            ("dynamodb:Query".into(), "arn:aws:dynamodb:us-east-1:000000000000:table/readings/index/by-ts".into())
        );
        assert_eq!(db.action_and_resource(Operation::ListTables, &Map::new()).1, "*");
    }
}
