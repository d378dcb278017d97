# The funnel rule's refusals (issue 15), the backfill run that queued a lead, the ledger's "refused", and the index of the health page's latency chart.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("crmify", "0004_crm_outage"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="lead",
            options={
                "ordering": ("-updated_at",),
                "permissions": (
                    ("sync_lead", "Can sync leads to the CRM"),
                    ("delete_from_crm", "Can delete leads from the CRM"),
                    ("change_lead_status", "Can mark leads converted or dead"),
                    ("preview_mapping", "Can use the mapper preview"),
                    ("force_lead_status", "Can move a lead's status back in the funnel"),
                ),
                "verbose_name": "lead",
                "verbose_name_plural": "leads",
            },
        ),
        migrations.AddField(
            model_name="lead",
            name="backfill_run",
            field=models.ForeignKey(
                blank=True,
                editable=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="leads",
                to="crmify.backfillrun",
                verbose_name="last queued by backfill run",
            ),
        ),
        migrations.AddField(
            model_name="lead",
            name="status_refused",
            field=models.CharField(
                blank=True,
                default="",
                editable=False,
                max_length=100,
                verbose_name="status change refused",
            ),
        ),
        migrations.AddField(
            model_name="lead",
            name="status_refused_at",
            field=models.DateTimeField(
                blank=True, editable=False, null=True, verbose_name="status change refused at"
            ),
        ),
        migrations.AlterField(
            model_name="ledgerentry",
            name="outcome",
            field=models.CharField(
                choices=[
                    ("ok", "OK"),
                    ("transient", "Transient error"),
                    ("permanent", "Permanent error"),
                    ("refused", "Refused, not sent"),
                ],
                max_length=16,
                verbose_name="outcome",
            ),
        ),
        migrations.AddIndex(
            model_name="lead",
            index=models.Index(fields=["last_synced_at"], name="crmify_lead_last_synced"),
        ),
    ]
