//! The current ISO week from the system clock, computed here independently of the service
//! so that a mistake in its week code cannot hide itself.

/// `YYYY-Www` for today, UTC.
pub fn current_iso_week() -> String {
    iso_week_weeks_ago(0)
}

/// `YYYY-Www` of the week `weeks` before this one, UTC.
pub fn iso_week_weeks_ago(weeks: i64) -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    iso_week_of_day((seconds / 86_400) as i64 - 7 * weeks)
}

/// The ISO week of a day counted from 1970-01-01: the week belongs to the year of its Thursday.
fn iso_week_of_day(day: i64) -> String {
    // 1970-01-01 was a Thursday; Monday is 0.
    let weekday = (day + 3).rem_euclid(7);
    let thursday = day - weekday + 3;
    let (year, day_of_year) = year_and_ordinal(thursday);
    format!("{year:04}-W{:02}", day_of_year / 7 + 1)
}

/// The year and the zero-based day within it of a day counted from 1970-01-01.
fn year_and_ordinal(mut day: i64) -> (i64, i64) {
    let mut year = 1970;
    let length = |y: i64| {
        if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 {
            366
        } else {
            365
        }
    };
    while day < 0 {
        year -= 1;
        day += length(year);
    }
    while day >= length(year) {
        day -= length(year);
        year += 1;
    }
    (year, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(y: i64, m: i64, d: i64) -> i64 {
        // Days from civil (Howard Hinnant's algorithm), for the table below.
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    #[test]
    fn agrees_with_known_weeks() {
        for ((y, m, d), week) in [
            ((2024, 1, 1), "2024-W01"),
            ((2023, 1, 1), "2022-W52"),
            ((2025, 12, 29), "2026-W01"),
            ((2020, 12, 31), "2020-W53"),
            ((2027, 1, 1), "2026-W53"),
            ((2026, 11, 23), "2026-W48"),
        ] {
            assert_eq!(iso_week_of_day(day(y, m, d)), week, "{y}-{m}-{d}");
        }
    }
}
