//! `starcite serve` argv: `--name value` / `--name=value` flags folded over the environment.

use std::collections::BTreeMap;

use super::variables::{variable_for_flag, Source};

/// What `starcite serve` was asked to do besides the configuration values.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ServeOptions {
    /// `--check-config`: validate, report and exit.
    pub check_config: bool,
    /// `--help` / `-h`.
    pub help: bool,
}

/// A command-line mistake (exit 2), reported before any configuration is validated.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    #[error("unknown flag {0} (see starcite serve --help)")]
    UnknownFlag(String),
    #[error("flag {0} requires a value")]
    MissingValue(String),
    #[error("unexpected argument {0:?} (starcite serve takes only flags)")]
    UnexpectedArgument(String),
}

/// Applies `arguments` (everything after `serve`) onto `variables`: a flag overrides the variable.
pub fn apply(
    arguments: &[String],
    variables: &mut BTreeMap<String, String>,
) -> Result<ServeOptions, UsageError> {
    let mut options = ServeOptions::default();
    let mut remaining = arguments.iter().peekable();
    while let Some(argument) = remaining.next() {
        match argument.as_str() {
            "--check-config" => {
                options.check_config = true;
                continue;
            }
            "--help" | "-h" => {
                options.help = true;
                continue;
            }
            _ => {}
        }
        if !argument.starts_with("--") {
            return Err(UsageError::UnexpectedArgument(argument.clone()));
        }
        let (flag, inline_value) = match argument.split_once('=') {
            Some((flag, value)) => (flag, Some(value.to_string())),
            None => (argument.as_str(), None),
        };
        let (variable, source) =
            variable_for_flag(flag).ok_or_else(|| UsageError::UnknownFlag(flag.to_string()))?;
        let value = match inline_value {
            Some(value) => value,
            None => {
                let next_is_value = remaining.peek().is_some_and(|next| !next.starts_with("--"));
                match (next_is_value, source) {
                    (true, _) => remaining.next().cloned().unwrap_or_default(),
                    // A bare boolean flag switches the setting on.
                    (false, Source::BooleanFlag) => "true".to_string(),
                    (false, _) => return Err(UsageError::MissingValue(flag.to_string())),
                }
            }
        };
        variables.insert(variable.to_string(), value);
    }
    Ok(options)
}

/// The `starcite serve --help` text, generated from the variable table.
pub fn help_text() -> String {
    let mut text = String::from(
        "Run a Starcite node.\n\nUsage: starcite serve [--check-config] [--<flag> <value>]...\n\n\
         Every flag overrides its environment variable (config.md):\n",
    );
    for (variable, source) in super::variables::VARIABLES {
        if *source == Source::EnvironmentOnly {
            continue;
        }
        text.push_str(&format!(
            "  {:<48} {}\n",
            super::variables::flag_name(variable),
            variable
        ));
    }
    text.push_str("\nEnvironment only: STARCITE_OPS_TOKEN, STARCITE_SECRET_KEY_BASE, STARCITE_S3_SECRET_ACCESS_KEY,\n  STARCITE_S3_SESSION_TOKEN, DATABASE_URL, STARCITE_POSTGRES_URL\n");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arguments(list: &[&str]) -> Vec<String> {
        list.iter().map(|argument| argument.to_string()).collect()
    }

    #[test]
    fn both_flag_forms_override_the_environment() {
        let mut variables = BTreeMap::from([("PORT".to_string(), "4000".to_string())]);
        let options = apply(
            &arguments(&["--port", "5000", "--num-groups=8", "--check-config"]),
            &mut variables,
        )
        .expect("valid flags");
        assert!(options.check_config);
        assert_eq!(variables["PORT"], "5000");
        assert_eq!(variables["STARCITE_NUM_GROUPS"], "8");
    }

    #[test]
    fn bare_boolean_flag_means_true() {
        let mut variables = BTreeMap::new();
        apply(
            &arguments(&["--metrics-enabled", "--port", "1"]),
            &mut variables,
        )
        .expect("valid flags");
        assert_eq!(variables["STARCITE_METRICS_ENABLED"], "true");
    }

    #[test]
    fn usage_errors() {
        let mut variables = BTreeMap::new();
        assert_eq!(
            apply(&arguments(&["--secret-key-base", "x"]), &mut variables),
            Err(UsageError::UnknownFlag("--secret-key-base".to_string()))
        );
        assert_eq!(
            apply(&arguments(&["--port"]), &mut variables),
            Err(UsageError::MissingValue("--port".to_string()))
        );
        assert_eq!(
            apply(&arguments(&["now"]), &mut variables),
            Err(UsageError::UnexpectedArgument("now".to_string()))
        );
    }

    #[test]
    fn a_flag_value_may_be_empty_or_start_with_a_dash() {
        let mut variables = BTreeMap::new();
        apply(
            &arguments(&["--port=", "--node-name", "-x@y"]),
            &mut variables,
        )
        .expect("valid flags");
        assert_eq!(variables["PORT"], "");
        assert_eq!(variables["NODE_NAME"], "-x@y");
    }
}
