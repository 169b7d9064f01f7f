//! Rules shared by names that other people read (nicknames and device names), and
//! [`TextRule`], the form in which every text rule of the services is stated to clients.

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// A text rule as a JSON Schema states it: lengths in characters and a pattern.
///
/// The parse function beside each constant of this type is what is enforced; the constant is
/// what the API's spec tells clients of that rule, so a client generator or a form can refuse
/// what the server would. Where the two could part, a test holds them together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextRule {
    pub min_chars: usize,
    pub max_chars: usize,
    /// A regular expression the whole text must match (JSON Schema searches, so it is
    /// anchored). Written in ASCII with `\uXXXX` escapes only, which ECMA 262, Python's `re`
    /// and Rust's `regex` all read the same way.
    pub pattern: Option<&'static str>,
    /// The rule in words, all of it: also what no pattern can say.
    pub description: &'static str,
}

/// The characters [`is_hidden_or_control`] refuses in the Basic Multilingual Plane, as the
/// inside of a regex character class. The format characters above it (U+110BD, U+E0001 and
/// the tags U+E0020–U+E007F, among others) can only be named by escapes that need a
/// Unicode-mode ECMA 262 regex, so no pattern names them, and the rules that refuse them say
/// so in words.
macro_rules! hidden_or_control_bmp {
    () => {
        r"\u0000-\u001F\u007F-\u009F\u00AD\u0600-\u0605\u061C\u06DD\u070F\u0890-\u0891\u08E2\u180E\u200B-\u200F\u202A-\u202E\u2060-\u2064\u2066-\u206F\uFEFF\uFFF9-\uFFFB"
    };
}

/// White space as `str::trim` knows it, less the characters that are refused anyway.
macro_rules! visible_white_space {
    () => {
        r"\u0020\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000"
    };
}

/// The pattern of a displayed name: no control or format character (see
/// `hidden_or_control_bmp` for those above U+FFFF), and something besides white space.
pub const DISPLAYED_NAME_PATTERN: &str = concat!(
    "^[^",
    hidden_or_control_bmp!(),
    "]*[^",
    hidden_or_control_bmp!(),
    visible_white_space!(),
    "][^",
    hidden_or_control_bmp!(),
    "]*$"
);

/// What a displayed name's description says about its characters, the ones no pattern names
/// included.
#[macro_export]
macro_rules! displayed_name_characters {
    () => {
        "Not only white space; no control or format characters (Unicode Cc and Cf). The pattern \
         names those below U+10000; the format characters above it (U+110BD, U+110CD, \
         U+13430–U+1343F, U+1BCA0–U+1BCA3, U+1D173–U+1D17A, U+E0001, U+E0020–U+E007F) are \
         refused too."
    };
}

/// Whether `c` may not appear in a displayed name: control characters, and Unicode format
/// characters (category Cf), which draw nothing themselves but change what is around them: a
/// right-to-left override turns "Living room" into text that reads otherwise, and zero-width
/// characters make two names that look the same differ.
pub fn is_hidden_or_control(c: char) -> bool {
    c.is_control() || c.general_category() == GeneralCategory::Format
}

/// Whether `text` satisfies what `rule` states: the test side of each rule's agreement with
/// its parse function.
#[cfg(test)]
pub(crate) fn rule_admits(rule: &TextRule, text: &str) -> bool {
    let length = text.chars().count();
    (rule.min_chars..=rule.max_chars).contains(&length)
        && rule.pattern.is_none_or(|pattern| {
            regex::Regex::new(pattern)
                .unwrap_or_else(|err| panic!("{pattern:?} does not compile: {err}"))
                .is_match(text)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_bidi_override_and_zero_width_characters_are_hidden() {
        for c in [
            '\0', '\n', '\u{202E}', '\u{2066}', '\u{200B}', '\u{200D}', '\u{FEFF}',
        ] {
            assert!(is_hidden_or_control(c), "{:?}", c);
        }
    }

    #[test]
    fn letters_digits_spaces_and_emoji_are_not() {
        for c in ['a', '名', '7', ' ', '😀', '-'] {
            assert!(!is_hidden_or_control(c), "{:?}", c);
        }
    }

    #[test]
    fn the_displayed_name_pattern_refuses_exactly_the_hidden_characters_of_the_first_plane() {
        let pattern = regex::Regex::new(DISPLAYED_NAME_PATTERN).unwrap();
        for c in (0..=0xFFFF).filter_map(char::from_u32) {
            assert_eq!(
                pattern.is_match(&format!("a{c}b")),
                !is_hidden_or_control(c),
                "U+{:04X}",
                u32::from(c)
            );
        }
    }

    #[test]
    fn the_hidden_characters_above_the_first_plane_are_those_the_note_names() {
        let named = [
            0x110BD..=0x110BD,
            0x110CD..=0x110CD,
            0x13430..=0x1343F,
            0x1BCA0..=0x1BCA3,
            0x1D173..=0x1D17A,
            0xE0001..=0xE0001,
            0xE0020..=0xE007F,
        ];
        for c in (0x10000..=0x10FFFF).filter_map(char::from_u32) {
            let in_note = named.iter().any(|range| range.contains(&u32::from(c)));
            assert_eq!(is_hidden_or_control(c), in_note, "U+{:X}", u32::from(c));
        }
    }

    #[test]
    fn a_displayed_name_needs_something_besides_white_space() {
        let pattern = regex::Regex::new(DISPLAYED_NAME_PATTERN).unwrap();
        for blank in ["", " ", "\u{3000}\u{00A0}", "\u{2028}"] {
            assert!(!pattern.is_match(blank), "{blank:?}");
        }
        for name in ["Living room", " a ", "名", "😀"] {
            assert!(pattern.is_match(name), "{name:?}");
        }
    }
}
