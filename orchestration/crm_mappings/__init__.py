"""CRM column-mapping presets: one YAML file per CRM beside this file (see loading.mappings)."""
