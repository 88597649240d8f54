//! Records: rows of named, typed fields.
//!
//! Every operator of a job has an output [`Schema`] (sinks have none), derived during
//! validation from its inputs and parameters. Type names in job files and in JSON are
//! lowercase: `integer`, `float`, `string`, `boolean`, `bytes`, `null`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The type of one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FieldType {
    /// A signed 64-bit integer.
    #[serde(rename = "integer")]
    Int,
    /// A 64-bit float.
    #[serde(rename = "float")]
    Float,
    /// A UTF-8 string.
    #[serde(rename = "string")]
    String,
    /// A boolean.
    #[serde(rename = "boolean")]
    Bool,
    /// Raw bytes (not usable in expressions).
    #[serde(rename = "bytes")]
    Bytes,
    /// Always null.
    #[serde(rename = "null")]
    Null,
}

impl FieldType {
    /// Every type, in documentation order.
    pub const ALL: [FieldType; 6] =
        [FieldType::Int, FieldType::Float, FieldType::String, FieldType::Bool, FieldType::Bytes, FieldType::Null];

    /// The name used in job files and JSON.
    pub const fn name(self) -> &'static str {
        match self {
            FieldType::Int => "integer",
            FieldType::Float => "float",
            FieldType::String => "string",
            FieldType::Bool => "boolean",
            FieldType::Bytes => "bytes",
            FieldType::Null => "null",
        }
    }

    /// The type named `name` (as written in job files), if any.
    pub fn from_name(name: &str) -> Option<FieldType> {
        FieldType::ALL.into_iter().find(|t| t.name() == name)
    }

    /// `integer` or `float`.
    pub const fn is_numeric(self) -> bool {
        matches!(self, FieldType::Int | FieldType::Float)
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One named field of a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    pub name: String,
    pub ty: FieldType,
    /// Whether the value may be missing (null) in a record.
    pub nullable: bool,
}

impl Field {
    /// A field that is never null.
    pub fn new(name: impl Into<String>, ty: FieldType) -> Self {
        Self { name: name.into(), ty, nullable: false }
    }

    /// A field that may be null.
    pub fn nullable(name: impl Into<String>, ty: FieldType) -> Self {
        Self { name: name.into(), ty, nullable: true }
    }
}

/// The ordered fields of the records an operator emits.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Schema {
    pub fields: Vec<Field>,
}

impl Schema {
    pub fn new(fields: Vec<Field>) -> Self {
        Self { fields }
    }

    /// The field called `name`.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The position of the field called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }

    /// The field names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.fields.iter().map(|f| f.name.as_str())
    }

    /// The field names joined with ", " (for messages).
    pub fn names_list(&self) -> String {
        self.names().collect::<Vec<_>>().join(", ")
    }

    /// Adds `field`, replacing a field of the same name in place.
    pub fn upsert(&mut self, field: Field) {
        match self.fields.iter_mut().find(|f| f.name == field.name) {
            Some(existing) => *existing = field,
            None => self.fields.push(field),
        }
    }

    /// Same field names and types in the same order (nullability is ignored).
    pub fn same_shape(&self, other: &Schema) -> bool {
        self.fields.len() == other.fields.len()
            && self.fields.iter().zip(&other.fields).all(|(a, b)| a.name == b.name && a.ty == b.ty)
    }
}

/// `(n: integer, line: string?)`: a `?` marks a nullable field.
impl fmt::Display for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(")?;
        for (i, field) in self.fields.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}: {}{}", field.name, field.ty, if field.nullable { "?" } else { "" })?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_round_trip_through_serde() {
        for ty in FieldType::ALL {
            let json = serde_json::to_string(&ty).unwrap();
            assert_eq!(json, format!("\"{}\"", ty.name()));
            assert_eq!(serde_json::from_str::<FieldType>(&json).unwrap(), ty);
            assert_eq!(FieldType::from_name(ty.name()), Some(ty));
        }
        assert_eq!(FieldType::from_name("int"), None);
    }

    #[test]
    fn lookup_upsert_and_display() {
        let mut schema = Schema::new(vec![Field::new("n", FieldType::Int), Field::nullable("s", FieldType::String)]);
        assert_eq!(schema.field("s").map(|f| f.ty), Some(FieldType::String));
        assert_eq!(schema.index_of("n"), Some(0));
        assert!(schema.field("x").is_none());
        schema.upsert(Field::new("n", FieldType::Float));
        schema.upsert(Field::new("b", FieldType::Bool));
        assert_eq!(schema.to_string(), "(n: float, s: string?, b: boolean)");
        assert_eq!(schema.names_list(), "n, s, b");
    }
}
