//! The product catalog, as a stream: each change message replaces its product. Kept in state so a
//! recommendation reads only the products it can recommend:
//! - `product/<id>`: the product as last seen (to move it when its category changes);
//! - `category/<name>`: the active products of one category;
//! - `popular`: the active products with `popularity_score` above the threshold, any category.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tributary_model::{Rejection, Row};

/// The table the catalog is mirrored to (one row per product, upserted).
pub const TABLE: &str = "products";

/// One product.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Product {
    pub product_id: String,
    pub product_name: String,
    pub category: String,
    pub popularity_score: f64,
    /// `active` products are recommended; anything else (`inactive`, `discontinued`) is not.
    pub status: String,
    /// When this version of the product was published (ms); an older change never replaces a newer one.
    pub changed_ms: i64,
}

impl Product {
    pub fn active(&self) -> bool {
        self.status.eq_ignore_ascii_case("active")
    }

    /// Parses a catalog change message.
    pub fn parse(payload: &[u8], changed_ms: i64) -> Result<Product, Rejection> {
        let v: Value = serde_json::from_slice(payload).map_err(|e| {
            Rejection::new("not-json", format!("expected a JSON object product, got invalid JSON: {e}"))
        })?;
        let text = |name: &str| -> Result<String, Rejection> {
            match v.get(name) {
                Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
                Some(Value::Number(n)) => Ok(n.to_string()),
                _ => Err(Rejection::new("missing-field", format!("expected a non-empty string field '{name}'"))),
            }
        };
        let popularity_score = match v.get("popularity_score") {
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        }
        .filter(|p: &f64| p.is_finite())
        .ok_or_else(|| Rejection::new("bad-value", "expected a number field 'popularity_score'"))?;
        Ok(Product {
            product_id: text("product_id")?,
            product_name: text("product_name")?,
            category: text("category")?,
            popularity_score,
            status: v.get("status").and_then(Value::as_str).unwrap_or("active").to_owned(),
            changed_ms,
        })
    }

    /// The product's row in the `products` table.
    pub fn row(&self, updated_at: &str) -> Row {
        let json = json!({
            "product_id": self.product_id,
            "product_name": self.product_name,
            "category": self.category,
            "popularity_score": self.popularity_score,
            "status": self.status,
            "updated_at": updated_at,
        });
        Row { table: TABLE.into(), insert_id: self.product_id.clone(), json: json.to_string() }
    }
}

/// A set of products by id (one category, or the popular ones).
pub type Shelf = BTreeMap<String, Product>;

/// Puts `product` on `shelf` when it belongs there, takes it off otherwise. Returns whether the shelf changed.
pub fn place(shelf: &mut Shelf, product: &Product, belongs: bool) -> bool {
    if belongs {
        shelf.insert(product.product_id.clone(), product.clone()).as_ref() != Some(product)
    } else {
        shelf.remove(&product.product_id).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_products_and_refuses_incomplete_ones() {
        let p =
            Product::parse(br#"{"product_id":7,"product_name":"Lamp","category":"home","popularity_score":"85.5"}"#, 1)
                .expect("valid");
        assert_eq!((p.product_id.as_str(), p.popularity_score, p.active()), ("7", 85.5, true));
        let reason = |s: &str| Product::parse(s.as_bytes(), 1).expect_err("refused").reason;
        assert_eq!(reason(r#"{"product_id":"1","category":"c","popularity_score":1}"#), "missing-field");
        assert_eq!(reason(r#"{"product_id":"1","product_name":"n","category":"c"}"#), "bad-value");
        assert_eq!(reason("nope"), "not-json");
    }

    #[test]
    fn shelves_follow_status_and_category() {
        let mut shelf = Shelf::new();
        let mut p = Product::parse(br#"{"product_id":"1","product_name":"n","category":"c","popularity_score":1}"#, 1)
            .expect("ok");
        assert!(place(&mut shelf, &p, p.active()));
        assert!(!place(&mut shelf, &p, p.active()), "unchanged");
        p.status = "inactive".into();
        assert!(place(&mut shelf, &p, p.active()));
        assert!(shelf.is_empty());
    }
}
