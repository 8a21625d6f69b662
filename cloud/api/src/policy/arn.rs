//! Resource ARNs IoT policies are written against: `arn:aws:iot:REGION:ACCOUNT:TYPE/NAME`.

/// `arn:aws:iot:{region}:{account}:client/{client_id}`
pub fn client(region: &str, account: &str, client_id: &str) -> String {
    format!("arn:aws:iot:{region}:{account}:client/{client_id}")
}

/// `arn:aws:iot:{region}:{account}:topic/{topic}`
pub fn topic(region: &str, account: &str, topic: &str) -> String {
    format!("arn:aws:iot:{region}:{account}:topic/{topic}")
}

/// `arn:aws:iot:{region}:{account}:topicfilter/{filter}`
pub fn topic_filter(region: &str, account: &str, filter: &str) -> String {
    format!("arn:aws:iot:{region}:{account}:topicfilter/{filter}")
}

/// `arn:aws:iot:{region}:{account}:thing/{thing}`
pub fn thing(region: &str, account: &str, thing: &str) -> String {
    format!("arn:aws:iot:{region}:{account}:thing/{thing}")
}

/// `arn:aws:iot:{region}:{account}:cert/{certificate_id}`
pub fn cert(region: &str, account: &str, certificate_id: &str) -> String {
    format!("arn:aws:iot:{region}:{account}:cert/{certificate_id}")
}

/// `arn:aws:iot:{region}:{account}:policy/{name}`
pub fn policy(region: &str, account: &str, name: &str) -> String {
    format!("arn:aws:iot:{region}:{account}:policy/{name}")
}

/// `arn:aws:iot:{region}:{account}:thinggroup/{name}`
pub fn thing_group(region: &str, account: &str, name: &str) -> String {
    format!("arn:aws:iot:{region}:{account}:thinggroup/{name}")
}

/// `arn:aws:iot:{region}:{account}:thingtype/{name}`
pub fn thing_type(region: &str, account: &str, name: &str) -> String {
    format!("arn:aws:iot:{region}:{account}:thingtype/{name}")
}

/// `arn:aws:iot:{region}:{account}:rolealias/{name}`
pub fn role_alias(region: &str, account: &str, name: &str) -> String {
    format!("arn:aws:iot:{region}:{account}:rolealias/{name}")
}
