//! Rules shared by names that other people read: nicknames and device names.

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// Whether `c` may not appear in a displayed name: control characters, and Unicode format
/// characters (category Cf), which draw nothing themselves but change what is around them: a
/// right-to-left override turns "Living room" into text that reads otherwise, and zero-width
/// characters make two names that look the same differ.
pub fn is_hidden_or_control(c: char) -> bool {
    c.is_control() || c.general_category() == GeneralCategory::Format
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
}
