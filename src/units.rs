//! Byte sizes as people write them on a command line: `64MiB`, `1GB`, `16M`, `4096`.
//!
//! Decimal units (kB, MB, GB, TB) are powers of 1000, binary units (KiB, MiB, GiB, TiB)
//! powers of 1024; a bare letter (K, M, G, T) is binary, as in rclone and dd.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("{0:?} is not a size; write a number with an optional unit, like 64MiB, 1GB or 4096")]
    Invalid(String),
    #[error("{0:?} is too large")]
    TooLarge(String),
}

pub fn parse_size(input: &str) -> Result<u64, SizeError> {
    let text = input.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit = unit.trim();
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(SizeError::Invalid(input.to_owned())),
    };
    if number.is_empty()
        || number.matches('.').count() > 1
        || number.starts_with('.')
        || number.ends_with('.')
    {
        return Err(SizeError::Invalid(input.to_owned()));
    }
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let whole: u64 = whole
        .parse()
        .map_err(|_| SizeError::TooLarge(input.to_owned()))?;
    let mut bytes = whole
        .checked_mul(multiplier)
        .ok_or_else(|| SizeError::TooLarge(input.to_owned()))?;
    if !fraction.is_empty() {
        // Up to 9 fractional digits, enough for any unit; rounded down to a whole byte.
        let digits = &fraction[..fraction.len().min(9)];
        let scale = 10u128.pow(digits.len() as u32);
        let frac: u128 = digits
            .parse()
            .map_err(|_| SizeError::Invalid(input.to_owned()))?;
        bytes = bytes
            .checked_add((frac * multiplier as u128 / scale) as u64)
            .ok_or_else(|| SizeError::TooLarge(input.to_owned()))?;
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_decimal_and_binary_units() {
        let cases = [
            ("4096", 4096),
            ("0", 0),
            ("1b", 1),
            ("64MiB", 64 << 20),
            ("64mib", 64 << 20),
            ("16M", 16 << 20),
            ("1GB", 1_000_000_000),
            ("1 GiB", 1 << 30),
            ("5GiB", 5 << 30),
            ("1.5KiB", 1536),
            ("2T", 2 << 40),
            ("1kB", 1000),
        ];
        for (input, want) in cases {
            assert_eq!(parse_size(input), Ok(want), "{input}");
        }
    }

    #[test]
    fn rejects_what_is_not_a_size() {
        for input in [
            "", "MiB", "-1", "1.2.3MiB", "1XB", "12 34", ".5M", "5.M", "ten",
        ] {
            assert!(
                matches!(parse_size(input), Err(SizeError::Invalid(_))),
                "{input:?}"
            );
        }
        assert!(matches!(
            parse_size("99999999999999999999"),
            Err(SizeError::TooLarge(_))
        ));
        assert!(matches!(
            parse_size("20000000TiB"),
            Err(SizeError::TooLarge(_))
        ));
    }
}
