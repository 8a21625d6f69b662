//! `parse_time(pattern, epochMillis[, zone])`: an epoch time in milliseconds written with a
//! Joda-Time pattern, as the AWS IoT SQL reference documents it ("parse_time"). The rules use it
//! in action templates to partition what they store by date (`${parse_time("yyyy/MM/dd",
//! timestamp())}`).
//!
//! The pattern letters written here are Joda's: `G` era, `y` year (`yy` two digits), `D` day of
//! year, `M` month (`MMM` "Mar", `MMMM` "March"), `d` day of month, `E` day of week (`EEE` "Fri",
//! `EEEE` "Friday"), `e` day of week number (Monday 1), `a` AM/PM, `H` hour 0–23, `k` 1–24, `K`
//! 0–11, `h` 1–12, `m` minute, `s` second, `S` fraction of second, `z` zone name, `Z` offset
//! (`+0000`; `ZZ` `+00:00`; `ZZZ` the zone id); text between single quotes is literal (`''` is a
//! quote), and other non-letters are copied. A count of number letters is the minimum width,
//! zero-padded. Only UTC is known: a zone argument other than `UTC`, `GMT`, `Z`, `Etc/UTC` or
//! `Etc/GMT` makes the result Undefined, as does a letter outside this list (`C`, `Y`, `x`, `w`).

/// The formatted time, or `None` when the pattern uses a letter this engine does not write, or
/// the zone is not UTC.
pub(crate) fn format(pattern: &str, epoch_ms: i64, zone: Option<&str>) -> Option<String> {
    if let Some(zone) = zone
        && !["UTC", "GMT", "Z", "Etc/UTC", "Etc/GMT"].iter().any(|z| z.eq_ignore_ascii_case(zone))
    {
        return None;
    }
    let t = Civil::from_epoch_ms(epoch_ms);
    let mut out = String::new();
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            // A quoted literal; `''` is one quote, inside or outside the quotes.
            if chars.get(i + 1) == Some(&'\'') {
                out.push('\'');
                i += 2;
                continue;
            }
            i += 1;
            while i < chars.len() {
                if chars[i] == '\'' {
                    if chars.get(i + 1) == Some(&'\'') {
                        out.push('\'');
                        i += 2;
                        continue;
                    }
                    break;
                }
                out.push(chars[i]);
                i += 1;
            }
            i += 1;
            continue;
        }
        if !c.is_ascii_alphabetic() {
            out.push(c);
            i += 1;
            continue;
        }
        let mut n = 1;
        while chars.get(i + n) == Some(&c) {
            n += 1;
        }
        i += n;
        let field = match c {
            'G' => (if t.year > 0 { "AD" } else { "BC" }).to_owned(),
            'y' if n == 2 => pad(t.year.rem_euclid(100), 2),
            'y' => pad(t.year, n),
            'D' => pad(t.day_of_year, n),
            'M' if n >= 4 => MONTHS[t.month as usize - 1].to_owned(),
            'M' if n == 3 => MONTHS[t.month as usize - 1][..3].to_owned(),
            'M' => pad(t.month, n),
            'd' => pad(t.day, n),
            'E' if n >= 4 => DAYS[t.weekday as usize - 1].to_owned(),
            'E' => DAYS[t.weekday as usize - 1][..3].to_owned(),
            'e' => pad(t.weekday, n),
            'a' => (if t.hour < 12 { "AM" } else { "PM" }).to_owned(),
            'H' => pad(t.hour, n),
            'k' => pad(if t.hour == 0 { 24 } else { t.hour }, n),
            'K' => pad(t.hour % 12, n),
            'h' => pad(if t.hour % 12 == 0 { 12 } else { t.hour % 12 }, n),
            'm' => pad(t.minute, n),
            's' => pad(t.second, n),
            // Fraction of a second: the milliseconds' leading digits, zeros beyond them.
            'S' => {
                let ms = format!("{:03}", t.millis);
                if n <= 3 { ms[..n].to_owned() } else { format!("{ms}{}", "0".repeat(n - 3)) }
            }
            'z' => "UTC".to_owned(),
            'Z' if n == 1 => "+0000".to_owned(),
            'Z' if n == 2 => "+00:00".to_owned(),
            'Z' => "UTC".to_owned(),
            _ => return None,
        };
        out.push_str(&field);
    }
    Some(out)
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];

fn pad(value: i64, width: usize) -> String {
    if value < 0 { format!("-{:0width$}", -value) } else { format!("{value:0width$}") }
}

/// A UTC time broken into its calendar fields (proleptic Gregorian calendar).
struct Civil {
    year: i64,
    month: i64,
    day: i64,
    day_of_year: i64,
    /// Monday 1 … Sunday 7 (ISO, as Joda numbers them).
    weekday: i64,
    hour: i64,
    minute: i64,
    second: i64,
    millis: i64,
}

impl Civil {
    fn from_epoch_ms(ms: i64) -> Civil {
        let days = ms.div_euclid(86_400_000);
        let in_day = ms.rem_euclid(86_400_000);
        let (year, month, day) = civil_from_days(days);
        let day_of_year = days - days_from_civil(year, 1, 1) + 1;
        // 1970-01-01 was a Thursday (4).
        let weekday = (days + 3).rem_euclid(7) + 1;
        Civil {
            year,
            month,
            day,
            day_of_year,
            weekday,
            hour: in_day / 3_600_000,
            minute: in_day / 60_000 % 60,
            second: in_day / 1000 % 60,
            millis: in_day % 1000,
        }
    }
}

/// Year, month and day of a count of days since 1970-01-01: the era-based conversion (eras of
/// 400 years, 146,097 days, starting on a 1 March).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days since 1970-01-01 of a calendar date (the inverse of [`civil_from_days`]).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y.rem_euclid(400);
    let shifted_month = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2018-03-02T14:13:20.000Z, a Friday, day 61 of the year.
    const T: i64 = 1_520_000_000_000;

    #[test]
    fn patterns_write_the_utc_calendar_fields() {
        let cases = [
            ("yyyy-MM-dd'T'HH:mm:ss.SSS'Z'", "2018-03-02T14:13:20.000Z"),
            ("yyyy/MM/dd", "2018/03/02"),
            ("yyyyMMdd'T'HHmmss", "20180302T141320"),
            ("yyyy-MM-dd HH:mm:ss.S", "2018-03-02 14:13:20.0"),
            ("yy M d H m s", "18 3 2 14 13 20"),
            ("EEE, d MMM yyyy", "Fri, 2 Mar 2018"),
            ("EEEE MMMM", "Friday March"),
            ("D e", "61 5"),
            ("h:mm a", "2:13 PM"),
            ("k K", "14 2"),
            ("yyyy.MM.dd G 'at' HH:mm:ss z", "2018.03.02 AD at 14:13:20 UTC"),
            ("Z ZZ ZZZ", "+0000 +00:00 UTC"),
            ("'it''s' HH''mm", "it's 14'13"),
        ];
        for (pattern, expected) in cases {
            assert_eq!(format(pattern, T, None).as_deref(), Some(expected), "{pattern}");
        }
    }

    #[test]
    fn times_before_the_epoch_and_leap_days_are_counted_right() {
        assert_eq!(format("yyyy-MM-dd HH:mm:ss.SSS", -1, None).as_deref(), Some("1969-12-31 23:59:59.999"));
        // 2024-02-29T00:00:00Z and 2000-03-01T00:00:00Z.
        assert_eq!(format("yyyy-MM-dd D", 1_709_164_800_000, None).as_deref(), Some("2024-02-29 60"));
        assert_eq!(format("yyyy-MM-dd EEE", 951_868_800_000, None).as_deref(), Some("2000-03-01 Wed"));
        assert_eq!(format("h a k", 0, None).as_deref(), Some("12 AM 24"));
    }

    #[test]
    fn an_unknown_letter_or_a_zone_other_than_utc_is_undefined() {
        assert_eq!(format("yyyy ww", T, None), None);
        assert_eq!(format("yyyy", T, Some("America/Los_Angeles")), None);
        assert_eq!(format("yyyy", T, Some("utc")).as_deref(), Some("2018"));
        assert_eq!(format("yyyy", T, Some("Etc/GMT")).as_deref(), Some("2018"));
    }
}
