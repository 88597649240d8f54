//! Flint record schemas as Arrow schemas.
//!
//! Every Flint type has exactly one Arrow type, so a batch's layout follows from the
//! operator's schema and both ends of an exchange agree on it without sending it:
//!
//! | Flint | Arrow |
//! | --- | --- |
//! | `integer` | `Int64` |
//! | `float` | `Float64` |
//! | `string` | `Utf8` |
//! | `boolean` | `Boolean` |
//! | `bytes` | `Binary` |
//! | `null` | `Null` |
//!
//! A field's Arrow nullability is its Flint nullability (`null` fields are nullable
//! wherever validation produces them).

use std::sync::Arc;

use arrow::datatypes::{DataType, Field as ArrowField, Schema as ArrowSchema, SchemaRef};
use flint_common::job::{Field, FieldType, Schema};

use super::operator::TaskError;

/// The Arrow type of a Flint type.
pub fn arrow_type(ty: FieldType) -> DataType {
    match ty {
        FieldType::Int => DataType::Int64,
        FieldType::Float => DataType::Float64,
        FieldType::String => DataType::Utf8,
        FieldType::Bool => DataType::Boolean,
        FieldType::Bytes => DataType::Binary,
        FieldType::Null => DataType::Null,
    }
}

/// The Flint type of an Arrow type, if it is one of the six Flint uses.
pub fn flint_type(data_type: &DataType) -> Option<FieldType> {
    Some(match data_type {
        DataType::Int64 => FieldType::Int,
        DataType::Float64 => FieldType::Float,
        DataType::Utf8 => FieldType::String,
        DataType::Boolean => FieldType::Bool,
        DataType::Binary => FieldType::Bytes,
        DataType::Null => FieldType::Null,
        _ => return None,
    })
}

/// The Arrow field of a Flint field.
pub fn arrow_field(field: &Field) -> ArrowField {
    ArrowField::new(&field.name, arrow_type(field.ty), field.nullable)
}

/// The Arrow schema of a Flint schema.
pub fn arrow_schema(schema: &Schema) -> SchemaRef {
    Arc::new(ArrowSchema::new(schema.fields.iter().map(arrow_field).collect::<Vec<_>>()))
}

/// The Arrow schema of an operator's input or output, or a fatal error naming what is
/// missing (a plan that validated always has it).
pub(crate) fn required_schema(schema: Option<&Schema>, operator: &str, what: &str) -> Result<SchemaRef, TaskError> {
    schema
        .map(arrow_schema)
        .ok_or_else(|| TaskError::fatal(format!("operator '{operator}' has no {what} schema in its specification")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_maps_and_maps_back() {
        for ty in FieldType::ALL {
            assert_eq!(flint_type(&arrow_type(ty)), Some(ty));
        }
        assert_eq!(flint_type(&DataType::Int32), None);
    }

    #[test]
    fn schema_keeps_names_order_and_nullability() {
        let schema = Schema::new(vec![
            Field::new("n", FieldType::Int),
            Field::nullable("s", FieldType::String),
            Field::new("x", FieldType::Float),
            Field::new("b", FieldType::Bool),
            Field::nullable("raw", FieldType::Bytes),
            Field::nullable("nothing", FieldType::Null),
        ]);
        let arrow = arrow_schema(&schema);
        let got: Vec<(String, DataType, bool)> =
            arrow.fields().iter().map(|f| (f.name().clone(), f.data_type().clone(), f.is_nullable())).collect();
        assert_eq!(
            got,
            vec![
                ("n".into(), DataType::Int64, false),
                ("s".into(), DataType::Utf8, true),
                ("x".into(), DataType::Float64, false),
                ("b".into(), DataType::Boolean, false),
                ("raw".into(), DataType::Binary, true),
                ("nothing".into(), DataType::Null, true),
            ]
        );
    }
}
