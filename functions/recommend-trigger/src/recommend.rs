//! The seed's recommendation (§7.3), for one user: the active products not among the user's recent ones
//! that are in a category of interest or have `popularity_score` above the threshold, scored
//! `0.5·popularity + 0.3·(100 if the category interests the user) + 0.2·activity_score`, best first;
//! ties broken by product id, so the result is deterministic.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::activity::Profile;
use crate::catalog::Product;
use crate::settings::Settings;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendation {
    pub product_id: String,
    pub product_name: String,
    pub category: String,
    pub recommendation_score: f64,
}

pub fn score(product: &Product, profile: &Profile) -> f64 {
    let interest = if profile.interests.contains(&product.category) { 100.0 } else { 0.0 };
    0.5 * product.popularity_score + 0.3 * interest + 0.2 * profile.activity_score as f64
}

/// Ranks `candidates` (any products; filtered here) for `profile`.
pub fn recommend<'a>(
    candidates: impl IntoIterator<Item = &'a Product>,
    profile: &Profile,
    settings: &Settings,
) -> Vec<Recommendation> {
    let mut unique: BTreeMap<&str, &Product> = BTreeMap::new();
    for p in candidates {
        let wanted = p.active()
            && !profile.recent.contains(&p.product_id)
            && (profile.interests.contains(&p.category) || p.popularity_score > settings.popular_above);
        if wanted {
            unique.insert(&p.product_id, p);
        }
    }
    let mut recs: Vec<Recommendation> = unique
        .values()
        .map(|p| Recommendation {
            product_id: p.product_id.clone(),
            product_name: p.product_name.clone(),
            category: p.category.clone(),
            recommendation_score: score(p, profile),
        })
        .collect();
    recs.sort_by(|a, b| {
        b.recommendation_score.total_cmp(&a.recommendation_score).then(a.product_id.cmp(&b.product_id))
    });
    recs.truncate(settings.max_recommendations);
    recs
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn product(id: &str, cat: &str, pop: f64, status: &str) -> Product {
        Product {
            product_id: id.into(),
            product_name: format!("name {id}"),
            category: cat.into(),
            popularity_score: pop,
            status: status.into(),
            changed_ms: 0,
        }
    }

    #[test]
    fn filters_scores_and_breaks_ties_by_id() {
        let profile =
            Profile { recent: vec!["seen".into()], interests: BTreeSet::from(["books".into()]), activity_score: 5 };
        let catalog = [
            product("seen", "books", 99.0, "active"),
            product("b2", "books", 50.0, "active"),
            product("b1", "books", 50.0, "active"),
            product("off", "books", 90.0, "inactive"),
            product("pop", "toys", 81.0, "active"),
            product("meh", "toys", 80.0, "active"),
        ];
        let recs = recommend(&catalog, &profile, &Settings::default());
        let ids: Vec<&str> = recs.iter().map(|r| r.product_id.as_str()).collect();
        assert_eq!(ids, vec!["b1", "b2", "pop"]);
        assert_eq!(recs[0].recommendation_score, 0.5 * 50.0 + 30.0 + 1.0);
        assert_eq!(recs[2].recommendation_score, 0.5 * 81.0 + 1.0);
    }
}
