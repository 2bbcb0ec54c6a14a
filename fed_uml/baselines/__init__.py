"""The compared methods of the study (ISCA, DANN, CDAN, MCC, MDD), registered as `method=` names."""
