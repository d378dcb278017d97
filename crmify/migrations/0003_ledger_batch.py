"""Adds LedgerEntry.batch: the rows one batch call leaves (one per lead) share its id."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('crmify', '0002_upgrade_from_1_3'),
    ]

    operations = [
        migrations.AddField(
            model_name='ledgerentry',
            name='batch',
            field=models.UUIDField(blank=True, db_index=True, null=True, verbose_name='batch'),
        ),
    ]
