//! Table tests: AWS's documented examples (each group names the AWS IoT Core Developer Guide
//! page it comes from), then this engine's own cases for Undefined, types, binary payloads and
//! errors.

use serde_json::{Value as Json, json};

use super::*;

/// What a case expects.
enum Want {
    /// The rule matches and sends this JSON.
    Json(Json),
    /// The rule matches and sends these bytes.
    Bytes(&'static [u8]),
    /// The WHERE clause is not true: no output.
    NoMatch,
    /// The topic does not match the FROM filter.
    NotSubscribed,
    /// Evaluation fails.
    Error,
}

use Want::*;

const TIME: i64 = 1_481_825_251_155;

fn message<'a>(topic: &'a str, payload: &'a [u8]) -> Message<'a> {
    Message {
        topic,
        payload,
        client_id: Some("sensor-17"),
        principal: Some("ba67293af50bf2506f5f93469686da660c7c844e7b3950bfb16813e0d31e9373"),
        timestamp_ms: TIME,
        account_id: Some("123456789012"),
        trace_id: None,
        random_seed: 7,
    }
}

fn run(cases: &[(&str, &str, &str, Want)]) {
    let mut failures = Vec::new();
    for (payload, topic, sql, want) in cases {
        let statement = match parse(sql) {
            Ok(s) => s,
            Err(e) => {
                failures.push(format!("{sql}: {e}"));
                continue;
            }
        };
        let msg = message(topic, payload.as_bytes());
        let got = if statement.matches_topic(topic) { Some(evaluate(&statement, &msg)) } else { None };
        let ok = match (want, &got) {
            (Json(j), Some(Ok(Some(Output::Json(g))))) => j == g,
            (Bytes(b), Some(Ok(Some(Output::Bytes(g))))) => b == g,
            (NoMatch, Some(Ok(None))) => true,
            (NotSubscribed, None) => true,
            (Error, Some(Err(_))) => true,
            _ => false,
        };
        if !ok {
            let want = match want {
                Json(j) => j.to_string(),
                Bytes(b) => format!("bytes {b:?}"),
                NoMatch => "no match".into(),
                NotSubscribed => "not subscribed".into(),
                Error => "an error".into(),
            };
            failures.push(format!("{sql}\n  on {topic} {payload}\n  want {want}\n  got  {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

const COLOR: &str = r#"{"color":"red", "temperature":50}"#;
const DEVICE: &str =
    r#"{"deviceid":"iot123","temp":54.98,"humidity":32.43,"coords":{"latitude":47.615694,"longitude":-122.3359976}}"#;
const SENML: &str = r#"{"e":[{"n":"temperature","u":"Cel","t":1234,"v":22.5},{"n":"light","u":"lm","t":1235,"v":135},{"n":"acidity","u":"pH","t":1235,"v":7}]}"#;
const TRANSFORM: &str = r#"{"attributes":{"data1":1,"data2":2},"values":[{"a":3},{"b":4},{"c":5}]}"#;

#[test]
fn aws_documentation_examples() {
    run(&[
        // "SELECT clause"
        (COLOR, "topic/subtopic", "SELECT * FROM 'topic/subtopic'", Json(json!({"color":"red","temperature":50}))),
        (COLOR, "topic/subtopic", "SELECT color FROM 'topic/subtopic'", Json(json!({"color":"red"}))),
        (COLOR, "topic/subtopic", "SELECT color AS my_color FROM 'topic/subtopic'", Json(json!({"my_color":"red"}))),
        (
            COLOR,
            "topic/subtopic",
            "SELECT color as my_color, temperature as fahrenheit FROM 'topic/subtopic'",
            Json(json!({"my_color":"red","fahrenheit":50})),
        ),
        (COLOR, "a/b", "SELECT *, 15 as speed FROM 'a/b'", Json(json!({"color":"red","temperature":50,"speed":15}))),
        (COLOR, "a/b", "SELECT VALUE color FROM 'a/b'", Json(json!("red"))),
        (
            r#"{"color":{"red":255,"green":0,"blue":0}, "temperature":50}"#,
            "a/b",
            "SELECT color.red as red_value FROM 'a/b'",
            Json(json!({"red_value":255})),
        ),
        (
            COLOR,
            "a/b",
            "SELECT (temperature - 32) * 5 / 9 AS celsius, upper(color) as my_color FROM 'a/b'",
            Json(json!({"celsius":10,"my_color":"RED"})),
        ),
        // "SELECT clause", binary payloads: * alone, or only functions.
        ("\u{1}\u{2}not json", "a/b", "SELECT * FROM 'a/b'", Bytes(b"\x01\x02not json")),
        (
            "\u{1}\u{2}",
            "a/b",
            "SELECT encode(*, 'base64') AS data, timestamp() AS ts FROM 'a/b'",
            Json(json!({"data":"AQI=","ts":TIME})),
        ),
        ("\u{1}\u{2}", "a/b", "SELECT * FROM 'a/b' WHERE device_type = 'thermostat'", Error),
        ("\u{1}\u{2}", "a/b", "SELECT *, timestamp() AS timestamp FROM 'a/b'", Error),
        ("\u{1}\u{2}", "a/b", "SELECT * FROM 'a/b' WHERE timestamp() % 12 = 3", Bytes(b"\x01\x02")),
        ("\u{1}\u{2}", "a/b", "SELECT * FROM 'a/b' WHERE timestamp() % 12 = 0", NoMatch),
        // "FROM clause"
        (r#"{"temperature": 50}"#, "a/b", "SELECT temperature AS t FROM 'a/b'", Json(json!({"t":50}))),
        (r#"{"temperature": 50}"#, "a/c", "SELECT temperature AS t FROM 'a/b'", NotSubscribed),
        (r#"{"temperature": 70}"#, "a/e/f", "SELECT temperature AS t FROM 'a/#'", Json(json!({"t":70}))),
        (r#"{"temperature": 80}"#, "b/x", "SELECT temperature AS t FROM 'a/#'", NotSubscribed),
        (r#"{"temperature": 60}"#, "a/c", "SELECT temperature AS t FROM 'a/+'", Json(json!({"t":60}))),
        (r#"{"temperature": 70}"#, "a/e/f", "SELECT temperature AS t FROM 'a/+'", NotSubscribed),
        // "WHERE clause"
        (
            r#"{"color":"red", "temperature":40}"#,
            "a/b",
            "SELECT color AS my_color FROM 'a/b' WHERE temperature > 50 AND color <> 'red'",
            NoMatch,
        ),
        // "Data types"
        ("{}", "a/b", "SELECT NULL AS n FROM 'a/b'", Json(json!({"n":null}))),
        (r#"{"foo":null}"#, "a/b", "SELECT foo, bar FROM 'a/b'", Json(json!({"foo":null}))),
        ("{}", "a/b", r#"SELECT abs("-5.123") AS a FROM 'a/b'"#, Json(json!({"a":5.123}))),
        // "Literals"
        (
            r#"{"lat_long": [47.606,-122.332]}"#,
            "topic/subtopic",
            "SELECT {'latitude': get(lat_long, 0),'longitude':get(lat_long, 1)} as lat_long FROM 'topic/subtopic'",
            Json(json!({"lat_long":{"latitude":47.606,"longitude":-122.332}})),
        ),
        (
            r#"{"lat": 47.606, "long": -122.332}"#,
            "topic/subtopic",
            "SELECT [lat,long] as lat_long FROM 'topic/subtopic'",
            Json(json!({"lat_long":[47.606,-122.332]})),
        ),
        // "Case statements"
        (
            r#"{"color":"yellow"}"#,
            "a/b",
            "SELECT CASE color WHEN 'green' THEN 'go' WHEN 'yellow' THEN 'caution' WHEN 'red' THEN 'stop' ELSE 'you are not at a stop light' END as instructions FROM 'a/b'",
            Json(json!({"instructions":"caution"})),
        ),
        (
            r#"{"colour":"yellow"}"#,
            "a/b",
            "SELECT CASE color WHEN 'yellow' THEN 1 ELSE 2 END AS x FROM 'a/b'",
            Json(json!({})),
        ),
        // "JSON extensions"
        (
            r#"{"foo":{"bar":"RED","bar1":"GREEN","bar2":"BLUE"}}"#,
            "topic/subtopic",
            "SELECT foo.bar AS bar.baz FROM 'topic/subtopic'",
            Json(json!({"bar":{"baz":"RED"}})),
        ),
        (
            r#"{"mydata":{"item2":{"0":{"my-key":"myValue"}}}}"#,
            "iot/rules",
            r#"SELECT * from 'iot/rules' WHERE get(get(get(mydata,"item2"),"0"),"my-key") = "myValue""#,
            Json(json!({"mydata":{"item2":{"0":{"my-key":"myValue"}}}})),
        ),
        // "Nested object queries"
        (
            SENML,
            "my/topic",
            "SELECT (SELECT VALUE n FROM e) as sensors FROM 'my/topic'",
            Json(json!({"sensors":["temperature","light","acidity"]})),
        ),
        (
            SENML,
            "my/topic",
            "SELECT (SELECT v FROM e WHERE n = 'temperature') as temperature FROM 'my/topic'",
            Json(json!({"temperature":[{"v":22.5}]})),
        ),
        (
            SENML,
            "topic",
            "SELECT get((SELECT v FROM e WHERE n = 'temperature'), 0).v as temperature FROM 'topic'",
            Json(json!({"temperature":22.5})),
        ),
        // "Substitution templates" (the rule's SELECT; the template is tested below)
        (
            DEVICE,
            "my/iot/topic",
            "SELECT *, timestamp() AS timestamp FROM 'my/iot/topic'",
            Json(
                json!({"deviceid":"iot123","temp":54.98,"humidity":32.43,"coords":{"latitude":47.615694,"longitude":-122.3359976},"timestamp":TIME}),
            ),
        ),
        // "Functions": decode
        (
            r#"{"encoded_temp":"eyAidGVtcGVyYXR1cmUiOiAzMyB9Cg=="}"#,
            "topic/subtopic",
            r#"SELECT decode(encoded_temp,"base64").temperature AS temp from 'topic/subtopic'"#,
            Json(json!({"temp":33})),
        ),
        // "Functions": transform, examples 1 to 3
        (
            TRANSFORM,
            "A/B",
            r#"select value transform("enrichArray", attributes, values) from 'A/B'"#,
            Json(json!([{"a":3,"data1":1,"data2":2},{"b":4,"data1":1,"data2":2},{"c":5,"data1":1,"data2":2}])),
        ),
        (
            TRANSFORM,
            "A/B",
            r#"select value transform("enrichArray", {"key": attributes.data1}, values) from 'A/B'"#,
            Json(json!([{"a":3,"key":1},{"b":4,"key":1},{"c":5,"key":1}])),
        ),
        (
            r#"{"data1":"example","data2":{"a":"first attribute","b":"second attribute","c":[{"x":{"someInt":5,"someString":"hello"},"y":true},{"x":{"someInt":10,"someString":"world"},"y":false}]}}"#,
            "A/B",
            "select value transform('enrichArray', (select a, b from data2), (select value c from data2)) from 'A/B'",
            Json(json!([
                {"x":{"someInt":5,"someString":"hello"},"y":true,"a":"first attribute","b":"second attribute"},
                {"x":{"someInt":10,"someString":"world"},"y":false,"a":"first attribute","b":"second attribute"}
            ])),
        ),
    ]);
}

/// "Functions": each documented example `f(…) = result`, evaluated as `SELECT VALUE f(…)`.
#[test]
fn aws_function_examples() {
    let cases: &[(&str, Json)] = &[
        ("abs(-5)", json!(5)),
        ("accountid()", json!("123456789012")),
        ("acos(0)", json!(std::f64::consts::FRAC_PI_2)), // 1.5707963267948966 on the page
        ("asin(0)", json!(0)),
        ("atan(0)", json!(0)),
        ("atan2(1, 0)", json!(std::f64::consts::FRAC_PI_2)),
        ("bitand(13, 5)", json!(5)),
        ("bitor(8, 5)", json!(13)),
        ("bitxor(13, 5)", json!(8)),
        ("cast(true as Int)", json!(1)),
        ("ceil(1.2)", json!(2)),
        ("ceil(-1.2)", json!(-1)),
        ("chr(65)", json!("A")),
        ("chr(49)", json!("1")),
        ("clientid()", json!("sensor-17")),
        // The page's example says concat(1) = "1"; its table says one argument comes back unmodified.
        ("concat(1)", json!(1)),
        ("concat([1, 2, 3], 4)", json!([1, 2, 3, 4])),
        (r#"concat([1, 2, 3], "hello")"#, json!([1, 2, 3, "hello"])),
        (r#"concat("con", "cat")"#, json!("concat")),
        (r#"concat(1, "hello")"#, json!("1hello")),
        (r#"concat("he","is","man")"#, json!("heisman")),
        (r#"concat([1, 2, 3], "hello", [4, 5, 6])"#, json!([1, 2, 3, "hello", 4, 5, 6])),
        ("cos(0)", json!(1)),
        ("cosh(2.3)", json!(5.037220649268761)),
        (r#"endswith("cat","at")"#, json!(true)),
        ("exp(1)", json!(std::f64::consts::E)),
        ("floor(1.2)", json!(1)),
        ("floor(-1.2)", json!(-2)),
        (r#"get(["a", "b", "c"], 1)"#, json!("b")),
        (r#"get({"a":"b"}, "a")"#, json!("b")),
        // The page says get("abc", 1) = "a", which contradicts its own 0-based rule; the rule wins.
        (r#"get("abc", 1)"#, json!("b")),
        (r#"indexof("abcd", "bc")"#, json!(1)),
        ("isNull(5)", json!(false)),
        ("isNull(Null)", json!(true)),
        ("isUndefined(5)", json!(false)),
        ("isUndefined(floor([1,2,3]))", json!(true)),
        (r#"length("hi")"#, json!(2)),
        ("length(false)", json!(5)),
        ("ln(exp(1))", json!(1)),
        ("log(100)", json!(2)),
        (r#"lower("HELLO")"#, json!("hello")),
        (r#"lower(["HELLO"])"#, json!("[\"hello\"]")),
        (r#"lpad("hello", 2)"#, json!("  hello")),
        ("lpad(1, 3)", json!("   1")),
        (r#"Ltrim(" h i ")"#, json!("h i ")),
        ("mod(8, 3)", json!(2)),
        ("Nanvl(8, 3)", json!(8)),
        (r#"numbytes("hi")"#, json!(2)),
        (r#"numbytes("€")"#, json!(3)),
        ("power(2, 5)", json!(32)),
        ("principal()", json!("ba67293af50bf2506f5f93469686da660c7c844e7b3950bfb16813e0d31e9373")),
        ("remainder(8, 3)", json!(2)),
        (r#"replace("abcd", "bc", "x")"#, json!("axd")),
        (r#"replace("abcdabcd", "b", "x")"#, json!("axcdaxcd")),
        (r#"rpad("hello", 2)"#, json!("hello  ")),
        ("rpad(1, 3)", json!("1   ")),
        ("Round(1.2)", json!(1)),
        ("Round(1.5)", json!(2)),
        ("Round(1.7)", json!(2)),
        ("Round(-1.1)", json!(-1)),
        ("Round(-1.5)", json!(-2)),
        (r#"rtrim(" h i ")"#, json!(" h i")),
        ("sign(-7)", json!(-1)),
        ("sign(0)", json!(0)),
        ("sign(13)", json!(1)),
        ("sin(0)", json!(0)),
        ("sinh(2.3)", json!(4.936961805545957)),
        (r#"substring("012345", 0)"#, json!("012345")),
        (r#"substring("012345", 2)"#, json!("2345")),
        (r#"substring("012345", 2.745)"#, json!("2345")),
        ("substring(123, 2)", json!("3")),
        (r#"substring("012345", -1)"#, json!("012345")),
        ("substring(true, 1.2)", json!("rue")),
        ("substring(false, -2.411E247)", json!("false")),
        (r#"substring("012345", 1, 3)"#, json!("12")),
        (r#"substring("012345", -50, 50)"#, json!("012345")),
        (r#"substring("012345", 3, 1)"#, json!("")),
        ("sql_version()", json!("2016-03-23")),
        ("sqrt(9)", json!(3)),
        (r#"startswith("ranger","ran")"#, json!(true)),
        ("tan(3)", json!(-0.1425465430742778)),
        ("tanh(2.3)", json!(0.9800963962661914)),
        ("timestamp()", json!(TIME)),
        ("topic()", json!("things/myThings/thingOne")),
        ("topic(1)", json!("things")),
        (r#"Trim(" hi ")"#, json!("hi")),
        ("trunc(2.3, 0)", json!(2)),
        ("trunc(2.3123, 2)", json!(2.31)),
        ("trunc(2.888, 2)", json!(2.88)),
        ("trunc(2.00, 5)", json!(2)),
        (r#"upper("hello")"#, json!("HELLO")),
        (r#"upper(["hello"])"#, json!("[\"HELLO\"]")),
    ];
    let mut failures = Vec::new();
    for (call, want) in cases {
        let sql = format!("SELECT VALUE {call} FROM 'things/#'");
        let msg = message("things/myThings/thingOne", b"{}");
        match parse(&sql).map(|s| evaluate(&s, &msg)) {
            Ok(Ok(Some(Output::Json(got)))) if &got == want => {}
            other => failures.push(format!("{call}: want {want}, got {other:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn topic_under_basic_ingest_leaves_out_the_rule_prefix() {
    let topic = "$aws/rules/BuildingManager/Buildings/Building5/Floor2/Room201/Lights";
    let s = parse("SELECT topic() AS t, topic(3) AS floor, topic(9) AS none").unwrap();
    let out = evaluate(&s, &message(topic, b"{}")).unwrap().unwrap();
    assert_eq!(out, Output::Json(json!({"t":"Buildings/Building5/Floor2/Room201/Lights","floor":"Floor2"})));
    assert!(!s.matches_topic(topic), "a rule without FROM is reached only by its Basic Ingest name");
}

/// "Substitution templates": `${topic()}/republish` and friends.
#[test]
fn substitution_templates() {
    let msg = message("my/iot/topic", DEVICE.as_bytes());
    let cases: &[(&str, &str)] = &[
        ("${topic()}/republish", "my/iot/topic/republish"),
        ("${topic(3)}", "topic"),
        ("device/${deviceid}", "device/iot123"),
        ("${clientid()}-${timestamp()}", "sensor-17-1481825251155"),
        ("${coords}", r#"{"latitude":47.615694,"longitude":-122.3359976}"#),
        ("${coords.latitude}", "47.615694"),
        ("[${missing}]", "[]"),
        ("${concat(deviceid, '-', floor(temp))}", "iot123-54"),
        ("${get({'a': '}'}, 'a')}", "}"),
        ("no template, $ and {} kept", "no template, $ and {} kept"),
        ("$${deviceid}$", "$iot123$"),
        // Date partitions of stored objects, as AWS's S3 examples write them.
        (r#"raw/${parse_time("yyyy/MM/dd", timestamp())}/${topic(2)}.json"#, "raw/2016/12/15/iot.json"),
        (r#"${parse_time("yyyy-MM-dd'T'HH:mm:ss.SSS'Z'", timestamp(), "UTC")}"#, "2016-12-15T18:07:31.155Z"),
        (r#"[${parse_time("yyyy", timestamp(), "Europe/Paris")}]"#, "[]"),
    ];
    for (template, want) in cases {
        assert_eq!(substitute(template, &msg).as_deref(), Ok(*want), "{template}");
    }
    // Binary payloads: functions only.
    let binary = message("a/b", b"\x00\xff");
    assert_eq!(substitute("${topic(2)}", &binary).as_deref(), Ok("b"));
    assert!(matches!(substitute("device/${device_id}", &binary), Err(TemplateError::Eval(_))));
    // Bad templates.
    for (bad, pos) in [("a/${topic()", 3), ("${}", 3), ("x${nosuch()}", 4), ("${a b}", 5)] {
        match substitute(bad, &msg) {
            Err(TemplateError::Parse(e)) => assert_eq!(e.position, pos, "{bad}: {e}"),
            other => panic!("{bad}: {other:?}"),
        }
    }
}

#[test]
fn undefined_semantics() {
    let p = r#"{"a":1,"s":"x","n":null,"arr":[1,2],"obj":{"k":true}}"#;
    run(&[
        // Missing keys are left out; comparisons with Undefined are Undefined, so WHERE fails.
        (p, "t", "SELECT missing, a FROM 't'", Json(json!({"a":1}))),
        (p, "t", "SELECT missing.deeper AS x, a.b AS y FROM 't'", Json(json!({}))),
        (p, "t", "SELECT * FROM 't' WHERE missing = 1", NoMatch),
        (p, "t", "SELECT * FROM 't' WHERE missing <> 1", NoMatch),
        (p, "t", "SELECT * FROM 't' WHERE NOT (missing = 1)", NoMatch),
        (p, "t", "SELECT * FROM 't' WHERE isUndefined(missing)", Json(serde_json::from_str(p).unwrap())),
        (p, "t", "SELECT VALUE missing FROM 't'", Bytes(b"")),
        (p, "t", "SELECT missing = 1 AS eq, missing + 1 AS sum, a + missing AS sum2 FROM 't'", Json(json!({}))),
        // Null is a value: it is kept, and = Null is true.
        (
            p,
            "t",
            "SELECT n, n = NULL AS eq, n <> NULL AS ne, isNull(n) AS isnull FROM 't'",
            Json(json!({"n":null,"eq":true,"ne":false,"isnull":true})),
        ),
        // WHERE must be true: a non-Boolean is no match; "true" converts.
        (p, "t", "SELECT a FROM 't' WHERE a", NoMatch),
        (p, "t", "SELECT a FROM 't' WHERE 'TRUE'", Json(json!({"a":1}))),
        (p, "t", "SELECT a FROM 't' WHERE obj.k AND 'true'", Json(json!({"a":1}))),
        (p, "t", "SELECT a FROM 't' WHERE obj.k AND 1", NoMatch),
        // Undefined inside literals is left out too.
        (
            p,
            "t",
            "SELECT [a, missing, s] AS l, {'x': missing, 'y': a} AS o FROM 't'",
            Json(json!({"l":[1,"x"],"o":{"y":1}})),
        ),
    ]);
}

#[test]
fn operator_type_tables() {
    let p = r#"{"i":7,"d":2.5,"s":"5","b":true,"arr":[1,{"x":2}],"obj":{"p":1,"q":[2]}}"#;
    run(&[
        // Arithmetic: Int op Int is an Int, with a Decimal anywhere it is a Decimal; strings that
        // read as numbers convert for - * / %, and + concatenates them instead.
        (
            p,
            "t",
            "SELECT i + 1 AS a, i / 2 AS b, i % 3 AS c, i * d AS e, i - d AS f FROM 't'",
            Json(json!({"a":8,"b":3,"c":1,"e":17.5,"f":4.5})),
        ),
        (
            p,
            "t",
            "SELECT s - 1 AS a, s * 2 AS b, s / 2 AS c, s % 3 AS d FROM 't'",
            Json(json!({"a":4,"b":10,"c":2.5,"d":2})),
        ),
        (
            p,
            "t",
            "SELECT s + 1 AS a, 1 + s AS b, 'n=' + i AS c, 'x' + arr AS d FROM 't'",
            Json(json!({"a":"51","b":"15","c":"n=7","d":"x[1,{\"x\":2}]"})),
        ),
        (
            p,
            "t",
            "SELECT b + 1 AS a, i / 0 AS b, d / 0 AS c, i % 0 AS d, 'x' - 1 AS e, -s AS f FROM 't'",
            Json(json!({"f":-5})),
        ),
        (
            p,
            "t",
            "SELECT 9223372036854775807 + 1 AS big, -9223372036854775808 AS min, -(-9223372036854775808) AS neg FROM 't'",
            Json(json!({"big":9.223372036854776e18,"min":i64::MIN,"neg":9.223372036854776e18})),
        ),
        // Int division truncates; overflow to infinity and division by zero are Undefined.
        (p, "t", "SELECT 7 / 2 AS a, 1e308 * 10 AS b, 0.0 / 0 AS c, -7 % 3 AS d FROM 't'", Json(json!({"a":3,"d":-1}))),
        // Comparisons convert to Decimal; = compares without conversion (mismatched types are not equal).
        (
            p,
            "t",
            "SELECT s > 4 AS a, s = 5 AS b, s <> 5 AS c, i = 7.0 AS d, b = 'true' AS e, b > 0 AS f FROM 't'",
            Json(json!({"a":true,"b":false,"c":true,"d":true,"e":false})),
        ),
        (
            p,
            "t",
            "SELECT arr = [1, {'x': 2.0}] AS a, obj = {'q': [2], 'p': 1} AS b, arr = [{'x': 2}, 1] AS c FROM 't'",
            Json(json!({"a":true,"b":true,"c":false})),
        ),
        // Logic takes Booleans and the strings "true"/"false".
        (
            p,
            "t",
            "SELECT NOT b AS a, NOT 'FALSE' AS b, NOT 1 AS c, b OR 'x' AS d, b AND 'false' AS e FROM 't'",
            Json(json!({"a":false,"b":true,"e":false})),
        ),
        // cast
        (
            p,
            "t",
            "SELECT cast(d AS Int) AS a, cast('1.9' AS Integer) AS b, cast(i AS String) AS c, cast(0 AS Boolean) AS d, cast('x' AS Decimal) AS e, cast(false AS Double) AS f, cast(obj AS varchar) AS g FROM 't'",
            Json(json!({"a":2,"b":1,"c":"7","d":false,"f":0,"g":"{\"p\":1,\"q\":[2]}"})),
        ),
        // Functions with arguments of the wrong type or number are Undefined.
        (
            p,
            "t",
            "SELECT abs(b) AS a, abs() AS b, abs(1, 2) AS c, get(obj, 1) AS d, get(arr, 5) AS e, get(arr, -1) AS f, topic(0) AS g, concat() AS h, upper(n) AS i, round('x') AS j FROM 't'",
            Json(json!({})),
        ),
    ]);
}

#[test]
fn payload_shapes() {
    run(&[
        // A JSON payload that is not an object: SELECT * gives it back; keys are Undefined.
        ("[1,2]", "t", "SELECT * FROM 't'", Json(json!([1, 2]))),
        ("42", "t", "SELECT VALUE * + 1 FROM 't'", Json(json!(43))),
        ("[1,2]", "t", "SELECT *, 1 AS one FROM 't'", Error),
        ("\"str\"", "t", "SELECT a, topic() AS t FROM 't'", Json(json!({"t":"t"}))),
        // Whole-number decimals are Ints in SQL 2016-03-23.
        (r#"{"v":10.0,"w":1e2}"#, "t", "SELECT v, w FROM 't'", Json(json!({"v":10,"w":100}))),
        // Not JSON: the empty payload, invalid UTF-8, truncated JSON.
        ("", "t", "SELECT * FROM 't'", Bytes(b"")),
        ("{\"a\":", "t", "SELECT a FROM 't'", Error),
        (
            "{\"a\":",
            "t",
            "SELECT encode(*, 'base64') AS raw, clientid() AS c FROM 't'",
            Json(json!({"raw":"eyJhIjo=","c":"sensor-17"})),
        ),
        // Later items win over earlier ones and over * (order kept from the first).
        (r#"{"a":1,"b":2}"#, "t", "SELECT *, 3 AS a, 4 AS a.x FROM 't'", Json(json!({"a":{"x":4},"b":2}))),
        // Items without AS are named after the key or the function; others by position.
        (r#"{"a":{"b":1}}"#, "t", "SELECT a.b, upper('x'), 1 + 1 FROM 't'", Json(json!({"b":1,"upper":"X","_3":2}))),
    ]);
}

#[test]
fn nested_queries_over_objects_and_non_collections() {
    let p = r#"{"o":{"a":1,"b":2},"n":5,"e":[{"v":1},{"v":2},3]}"#;
    run(&[
        (p, "t", "SELECT (SELECT a FROM o) AS x FROM 't'", Json(json!({"x":{"a":1}}))),
        (p, "t", "SELECT (SELECT a FROM o WHERE b = 3) AS x, (SELECT a FROM n) AS y FROM 't'", Json(json!({}))),
        (
            p,
            "t",
            "SELECT (SELECT VALUE v FROM e WHERE v > 1) AS x, (SELECT * FROM e) AS y FROM 't'",
            Json(json!({"x":[2],"y":[{"v":1},{"v":2},3]})),
        ),
    ]);
}

#[test]
fn newuuid_and_rand_come_from_the_message_seed() {
    let s = parse("SELECT newuuid() AS u, newuuid() AS v, rand() AS r FROM 't'").unwrap();
    let out = evaluate(&s, &message("t", b"{}")).unwrap().unwrap();
    let again = evaluate(&s, &message("t", b"{}")).unwrap().unwrap();
    assert_eq!(out, again);
    let json = out.as_json().unwrap();
    let (u, v) = (json["u"].as_str().unwrap(), json["v"].as_str().unwrap());
    assert_ne!(u, v);
    assert_eq!(u.len(), 36);
    assert_eq!(&u[14..15], "4");
    let r = json["r"].as_f64().unwrap();
    assert!((0.0..1.0).contains(&r));
}

#[test]
fn deep_values_and_long_strings_stay_bounded() {
    // A replace that would build gigabytes is Undefined instead.
    let big = "x".repeat(100_000);
    let payload = json!({ "s": big }).to_string();
    let s = parse("SELECT replace(s, '', s) AS r, lpad(s, 99999999) AS p, length(s) AS n FROM 't'").unwrap();
    let out = evaluate(&s, &message("t", payload.as_bytes())).unwrap().unwrap();
    assert_eq!(out, Output::Json(json!({"p": format!("{}{}", " ".repeat(1000), "x".repeat(100_000)), "n": 100_000})));
    // Deeply nested payloads (serde_json refuses beyond 128 levels) are binary.
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let s = parse("SELECT * FROM 't'").unwrap();
    assert_eq!(evaluate(&s, &message("t", deep.as_bytes())).unwrap(), Some(Output::Bytes(deep.clone().into_bytes())));
}

#[test]
fn nested_queries_that_multiply_stop_at_the_step_budget() {
    let list = format!("[{}]", (0..100).map(|i| i.to_string()).collect::<Vec<_>>().join(","));
    let mut sql = "1".to_owned();
    for _ in 0..5 {
        sql = format!("(SELECT VALUE {sql} FROM {list})");
    }
    let s = parse(&format!("SELECT {sql} AS x FROM 't'")).unwrap();
    assert_eq!(evaluate(&s, &message("t", b"{}")), Err(EvalError::TooComplex));
    // A rule over a large array stays within it.
    let readings: Vec<Json> = (0..5000).map(|i| json!({"n": "t", "v": i})).collect();
    let payload = json!({ "e": readings }).to_string();
    let s = parse("SELECT (SELECT VALUE v * 2 FROM e WHERE n = 't' AND v % 1000 = 0) AS x FROM 't'").unwrap();
    let out = evaluate(&s, &message("t", payload.as_bytes())).unwrap().unwrap();
    assert_eq!(out, Output::Json(json!({"x": [0, 2000, 4000, 6000, 8000]})));
}

#[test]
fn expressions_at_the_depth_limit_evaluate() {
    let sql = format!("SELECT VALUE {}1{} FROM 't'", "abs(".repeat(62), ")".repeat(62));
    let s = parse(&sql).unwrap();
    assert_eq!(evaluate(&s, &message("t", b"{}")), Ok(Some(Output::Json(json!(1)))));
    let value_key = parse("SELECT value.x FROM 't'").unwrap();
    assert_eq!(evaluate(&value_key, &message("t", br#"{"value":{"x":2}}"#)), Ok(Some(Output::Json(json!({"x": 2})))));
}
