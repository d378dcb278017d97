# The CRM decides whether sales contact a customer (issue 14: changes from the CRM flow back).

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("shop", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="userprofile",
            name="sales_contact",
            field=models.BooleanField(
                default=True,
                help_text="Set from the CRM: off while the lead is disqualified there. Change the lead's "
                "status in the CRM to change it.",
            ),
        ),
    ]
