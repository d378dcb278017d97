"""Adds Lead.waiting_for_crm: a lead waiting for the CRM as a whole to answer again (crmify.crm_state)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('crmify', '0003_ledger_batch'),
    ]

    operations = [
        migrations.AddField(
            model_name='lead',
            name='waiting_for_crm',
            field=models.BooleanField(default=False, db_index=True, verbose_name='waiting for the CRM'),
        ),
    ]
