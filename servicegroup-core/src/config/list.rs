//! The entries of a list-valued driver key (`mc.servers`, `etcd.endpoints`,
//! `relay.urls`): one rule for every driver.

/// Every value split at commas (the environment and nova.conf give one
/// comma-separated string, TOML a list, possibly of such strings), each part
/// trimmed and passed through `normalize` (which may drop it with `None`), empty
/// parts dropped, duplicates removed (the first kept), in order.
pub fn entries<'a>(
    values: &'a [String],
    normalize: impl Fn(&'a str) -> Option<&'a str>,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for value in values {
        for part in value.split(',') {
            let Some(part) = normalize(part.trim()) else {
                continue;
            };
            if part.is_empty() || out.iter().any(|s| s == part) {
                continue;
            }
            out.push(part.to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_trimmed_normalized_deduplicated_in_order() {
        let values = vec!["b:2, a:1/".to_owned(), " ,a:1,c:3".to_owned()];
        assert_eq!(
            entries(&values, |p| Some(p.trim_end_matches('/'))),
            ["b:2", "a:1", "c:3"]
        );
        assert_eq!(
            entries(&values, |p| (p != "c:3").then_some(p)),
            ["b:2", "a:1/", "a:1"]
        );
        assert!(entries(&[], Some).is_empty());
    }
}
