-- The currency of an A/B test variant's revenue: `test_variant_totals.revenue_minor` sums the
-- conversions' amounts in minor units, which means something only in one currency. The
-- `abtests` projector now keeps, per (test, variant), the first currency a conversion carried
-- (`currency`; null while none has) and whether a conversion carried another one
-- (`mixed_currencies`), so the results can name the revenue's currency or say it is mixed.
-- Rows projected before this migration take them from their converted, not yet pruned
-- assignments; `ocart replay abtests` rebuilds them exactly from the log.
ALTER TABLE test_variant_totals ADD COLUMN currency TEXT;
ALTER TABLE test_variant_totals ADD COLUMN mixed_currencies BOOLEAN NOT NULL DEFAULT false;
UPDATE test_variant_totals SET
    currency = (
        SELECT min(a.currency) FROM test_assignments a
        WHERE a.test_id = test_variant_totals.test_id AND a.variant = test_variant_totals.variant
          AND a.converted AND a.currency IS NOT NULL
    ),
    mixed_currencies = (
        SELECT count(DISTINCT a.currency) > 1 FROM test_assignments a
        WHERE a.test_id = test_variant_totals.test_id AND a.variant = test_variant_totals.variant
          AND a.converted AND a.currency IS NOT NULL
    );
