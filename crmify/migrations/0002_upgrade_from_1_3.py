"""Adds Lead.legacy_values; on a django-crmify 1.3 database, converts its crmify_lead in place.

1.3's own 0001_initial has our 0001's name, so a 1.3 site reaches this migration with its old table:
crmify.upgrade.forwards recognises it by its columns and converts it (see README, "Upgrading from 1.3").
The name is one no 1.3 site can have applied (their generated anchor migration had an automatic name).
"""

from django.db import migrations, models

import crmify.upgrade


class Migration(migrations.Migration):

    dependencies = [
        ('crmify', '0001_initial'),
    ]

    operations = [
        # The column is added (or the 1.3 table rebuilt with it) by the RunPython below, which decides
        # by looking at the table: a schema operation here would alter a 1.3 table as if it were ours.
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AddField(
                    model_name='lead',
                    name='legacy_values',
                    field=models.JSONField(blank=True, default=dict, editable=False, verbose_name='kept from django-crmify 1.3'),
                ),
            ],
        ),
        migrations.RunPython(crmify.upgrade.forwards, crmify.upgrade.backwards, elidable=False),
    ]
